"""Whether anyone but this user and root could change what a path names, as OpenSSH's
StrictModes asks of the directories above ``~/.ssh``.

Whoever may write a directory can rename an entry in it away and put one of theirs in its place;
so can its owner, who may chmod it at will. The sticky bit (/tmp) limits that to the entry's
owner. A link can be repointed by replacing it, which its owner can do in a sticky directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from .nofollow import is_trusted_owner

#: links followed on the way before giving up (Linux's own limit, ELOOP)
MAX_LINKS = 40


def check_parents(path: Path) -> None:
    """Raise PermissionError naming the first directory above ``path`` (absolute), or link on
    the way to it, that another user could use to put something else at ``path`` (blocking).

    Each must be root's or this user's; a directory must also be writable by no one else unless
    it has the sticky bit (like /tmp), its group counting as no one else when it is its
    owner's private group. ``path`` itself is the caller's to judge.

    The lookup is walked as the kernel walks it, not by ``resolve()`` and then judged: a link
    is read only once known to be root's or ours (one of theirs is refused unread), and the
    directories checked are every one a name is looked up in, the way through a link's target
    included, so a link of ours into a directory others may write is refused too. A ``..``
    climbs from where the walk is, as the kernel's does. A missing component ends the walk: what
    is not there yet, the caller makes, as its own.

    Raises:
        PermissionError: a directory or link on the way is another user's, or others may
            write it (the message names it and says what to do).
        OSError: the walk fails otherwise (ELOOP past MAX_LINKS, ENOTDIR, EACCES).
    """
    here, todo, followed = Path(path.anchor), list(path.parts[1:]), 0
    while todo:
        _check_dir(here)
        name = todo.pop(0)
        if name == "..":
            here = here.parent
            continue
        step = here / name
        try:
            st = os.lstat(step)
        except FileNotFoundError:
            return
        if not stat.S_ISLNK(st.st_mode):
            here = step
            continue
        _check_link(step, st)
        followed += 1
        if followed > MAX_LINKS:
            raise OSError(errno.ELOOP, f"more than {MAX_LINKS} links on the way", str(path))
        target = Path(os.readlink(step))
        todo[:0] = target.parts[1:] if target.is_absolute() else target.parts
        here = Path(target.anchor) if target.is_absolute() else here


def _check_dir(directory: Path) -> None:
    """Raise PermissionError if another user could rename entries of ``directory``."""
    st = os.lstat(directory)
    if not is_trusted_owner(st):
        raise PermissionError(
            errno.EPERM,
            f"{directory}, on the way to it, is uid {st.st_uid}'s, who could swap what lies "
            "below it for theirs (each directory on the way must be yours or root's)",
        )
    others_write = st.st_mode & 0o002 or (st.st_mode & 0o020 and not _private_group(st))
    if others_write and not st.st_mode & stat.S_ISVTX:
        raise PermissionError(
            errno.EPERM,
            f"{directory}, on the way to it, is {stat.filemode(st.st_mode)}: others may write "
            f"it, so they could swap what lies below it for theirs (chmod go-w {directory}, or "
            "chmod +t it as /tmp is)",
        )


def _private_group(st: os.stat_result) -> bool:
    """Whether the group of ``st`` is its owner's alone: the owner's primary group, of the
    owner's name, with no other member (Debian's and Ubuntu's user private groups, whose
    umask 002 leaves directories group-writable; OpenSSH there accepts them the same way).

    A member is also any account whose primary group it is: the group file does not list
    those (``useradd -g alice bob``), so the accounts are read too, as Debian's OpenSSH does.
    """
    try:
        import grp
        import pwd

        owner, group = pwd.getpwuid(st.st_uid), grp.getgrgid(st.st_gid)
    except (ImportError, KeyError):  # no such databases (Windows), or no such user or group
        return False
    alone = set(group.gr_mem) <= {owner.pw_name}
    if not (owner.pw_gid == st.st_gid and group.gr_name == owner.pw_name and alone):
        return False
    return all(a.pw_uid == st.st_uid for a in pwd.getpwall() if a.pw_gid == st.st_gid)


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and whichever of its parents are missing, each 0700 (``mkdir -p``
    would make the parents 0775 under umask 002, which :func:`check_parents` refuses where the
    group is not the user's own)."""
    for parent in reversed([path for path in directory.parents if not path.exists()]):
        with contextlib.suppress(FileExistsError):
            parent.mkdir(mode=0o700)
    directory.mkdir(mode=0o700, exist_ok=True)


def _check_link(link: Path, st: os.stat_result) -> None:
    """Raise PermissionError if the link at ``link`` (``st``: its lstat) is another user's."""
    if not is_trusted_owner(st):
        raise PermissionError(
            errno.EPERM,
            f"{link}, on the way to it, is a link of uid {st.st_uid}'s, who can point it "
            "elsewhere at any time (name the directory it leads to)",
        )
