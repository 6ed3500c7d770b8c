"""Standard output while a command runs: when it cannot be written, a one-line error or a quiet
exit, never a traceback."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from .._errors import DestinationError

STDOUT = "standard output"


class _Guarded:
    """``stream``, but a write or flush the system refuses (a full disk, an I/O error) raises
    a :class:`DestinationError` naming standard output. A reader that left (BrokenPipeError)
    is left as it is: the command line answers that with the shell's own status."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        """Write ``text``."""
        with _refused():
            return self._stream.write(text)

    def flush(self) -> None:
        """Flush what is buffered."""
        with _refused():
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _refused() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DestinationError(
            f"cannot write to {STDOUT}: {reason}; free space where it goes, or send it elsewhere",
            path=STDOUT,
        ) from exc


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """For the length of the block, writes to ``sys.stdout`` that fail raise a
    DestinationError (see :class:`_Guarded`)."""
    stream = sys.stdout
    sys.stdout = _Guarded(stream)
    try:
        yield
    finally:
        sys.stdout = stream


def drop() -> None:
    """Point stdout at /dev/null: its reader left (``| head``) or its disk is full, and the
    interpreter's own flush at exit would otherwise print "Exception ignored ..."."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
