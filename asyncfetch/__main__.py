"""``python -m asyncfetch`` and the ``asyncfetch`` command: the command line."""

import gc
import os
import sys

from ._version import VERSION_LINE


def main() -> int:
    """Run the command line; a bare ``--version`` is answered before its imports (~0.1 s)."""
    _fill_closed_standard_fds()
    if sys.argv[1:] == ["--version"]:
        print(VERSION_LINE)
        return 0
    from ._cli.main import main as command_line

    # What the imports made lives as long as the process: no collection walks it again, the
    # one at exit included (exit of a 1 MiB https download: ~24 ms -> ~9 ms).
    gc.freeze()
    return command_line()


def _fill_closed_standard_fds() -> None:
    """Put /dev/null on fds 0-2 where the command was started with them closed (``>&-``):
    else the next file or socket opened takes that number, and what is printed goes into it
    (a download's socket: libuv aborts the process on closing it). ``sys.stdout`` stays None,
    which the command line reports as a closed standard output."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one


if __name__ == "__main__":
    sys.exit(main())
