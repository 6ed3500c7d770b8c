"""check_parents: every directory and link on the way to a path is root's or ours, and no one
else may write a directory of them unless it is sticky; links are walked as the kernel walks
them, and one of another user's is not followed."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

import pytest

from asyncfetch._storage.safepath import check_parents

NOBODY = 65534


def test_private_parents_and_our_own_links_pass(tmp_path: Path) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "via").symlink_to("real")  # a relative link of ours
    (tmp_path / "real" / "up").symlink_to(tmp_path / "real" / "sub")  # an absolute one

    check_parents(tmp_path / "via" / "up" / ".." / "sub" / "state")
    check_parents(tmp_path / "missing" / "too" / "state")  # the rest is the caller's to make


def test_a_link_of_another_users_on_the_way_is_refused_unread(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    via = tmp_path / "via"
    via.symlink_to(tmp_path / "mine")
    os.lchown(via, NOBODY, NOBODY)

    with pytest.raises(PermissionError, match=f"{via}, on the way to it, is a link of uid"):
        check_parents(via / "state")


@pytest.mark.parametrize("mode", [0o777, 0o770])
def test_our_link_into_a_directory_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    """The link is ours, but where it leads others may move things: its target's way counts."""
    shared = tmp_path / "shared"
    (shared / "me").mkdir(parents=True)
    os.chmod(shared, mode)
    if mode == 0o770:  # group-writable: by a group others are in, not the owner's own
        if os.geteuid() != 0:
            pytest.skip("chgrp to a group this user is not in needs root")
        os.chown(shared, -1, NOBODY)
    (tmp_path / "via").symlink_to(shared / "me")

    with pytest.raises(PermissionError, match=f"{shared}, on the way to it, is d"):
        check_parents(tmp_path / "via" / "state")


def test_dot_dot_climbs_from_where_a_link_led(tmp_path: Path) -> None:
    """via/.. is the parent of via's target (an open directory), not tmp_path, as the kernel
    resolves it."""
    shared = tmp_path / "open"
    (shared / "me").mkdir(parents=True)
    os.chmod(shared, 0o777)
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "via").symlink_to(shared / "me")

    with pytest.raises(PermissionError, match=f"{shared}, on the way to it"):
        check_parents(tmp_path / "private" / "via" / ".." / "me" / "state")


def test_a_loop_of_links_ends(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")

    with pytest.raises(OSError, match="links on the way"):
        check_parents(tmp_path / "a" / "state")


@pytest.mark.skipif(os.geteuid() != 0, reason="chgrp to our primary group as root, in tests")
@pytest.mark.parametrize("also_theirs", [False, True])
def test_a_private_group_is_one_no_other_account_has_as_its_primary_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, also_theirs: bool
) -> None:
    """``useradd -g alice bob``: bob writes what alice's group may, though the group file
    does not list him; alice's group-writable directory is then not hers alone."""
    owner = pwd.getpwuid(os.geteuid())
    assert grp.getgrgid(owner.pw_gid).gr_name == owner.pw_name  # root's group: root's alone
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, -1, owner.pw_gid)
    os.chmod(home, 0o775)
    if also_theirs:
        bob = pwd.struct_passwd(("bob", "x", NOBODY, owner.pw_gid, "", "/home/bob", "/bin/sh"))
        accounts = pwd.getpwall()
        monkeypatch.setattr(pwd, "getpwall", lambda: [*accounts, bob])

    if also_theirs:
        with pytest.raises(PermissionError, match=f"{home}, on the way to it, is drwxrwxr-x"):
            check_parents(home / "state")
    else:
        check_parents(home / "state")
