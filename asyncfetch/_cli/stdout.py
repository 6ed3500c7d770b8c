"""Standard output while a command runs: when it cannot be written, a one-line error or a quiet
exit, never a traceback."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from .._errors import DestinationError

STDOUT = "standard output"
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class Unwritable(DestinationError):
    """Standard output cannot be written: closed, or the system refused a write (a full disk,
    an I/O error). What the command did stands; only its report is lost."""


class _Guarded:
    """``stream``, but a write or flush the system refuses raises :class:`Unwritable`, and so
    does any write when there is no stream (the command started with stdout closed, ``>&-``,
    where ``print`` would otherwise say nothing). A reader that left (BrokenPipeError) is left
    as it is: the command line answers that with the shell's own status."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        """Write ``text``."""
        stream = self._open()
        with _refused():
            return stream.write(text)

    def flush(self) -> None:
        """Flush what is buffered."""
        if self._stream is not None:
            with _refused():
                self._stream.flush()

    def _open(self) -> TextIO:
        if self._stream is None:
            raise Unwritable(f"{STDOUT} is closed; give the command one to print to", path=STDOUT)
        return self._stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._open(), name)


@contextlib.contextmanager
def _refused() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        todo = "free space where it goes, or send it elsewhere"
        if exc.errno not in _NO_ROOM:
            todo = "send it elsewhere"
        raise Unwritable(f"cannot write to {STDOUT}: {reason}; {todo}", path=STDOUT) from exc


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """For the length of the block, writes to ``sys.stdout`` that fail raise
    :class:`Unwritable` (see :class:`_Guarded`)."""
    stream = sys.stdout
    sys.stdout = _Guarded(stream)
    try:
        yield
    finally:
        sys.stdout = stream


def drop() -> None:
    """Point stdout at /dev/null: its reader left (``| head``) or its disk is full, and the
    interpreter's own flush at exit would otherwise print "Exception ignored ..."."""
    if sys.stdout is None:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
