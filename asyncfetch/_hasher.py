"""SHA-256 of a file while it is being written: a thread hashes the contiguous prefix as it grows.

The hasher reads back from the file (page cache) rather than keeping received bytes around,
so memory stays at one small buffer whatever the file size or the order bytes arrive in.
"""

from __future__ import annotations

import hashlib
import os
import threading

HASH_BLOCK = 1 << 20  # as fast as 4 MiB from page cache; a batch runs one hasher per file


class PrefixHasher:
    """Hashes bytes ``[0, prefix)`` of an open file in a background thread.

    Call :meth:`advance` whenever the contiguous prefix on disk grows, and :meth:`digest`
    (blocking) once the whole file is written.
    """

    def __init__(self, fd: int, name: str = "asyncfetch-hasher") -> None:
        self._fd = fd
        self._sha = hashlib.sha256()
        self._hashed = 0
        self._target = 0
        self._closed = False
        self._error: OSError | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def hashed(self) -> int:
        """Bytes hashed so far."""
        return self._hashed

    def advance(self, prefix: int) -> None:
        """The first ``prefix`` bytes of the file are written and final."""
        with self._cond:
            if prefix > self._target:
                self._target = prefix
                self._cond.notify()

    def digest(self, size: int) -> str:
        """Wait until ``size`` bytes are hashed and return the hex digest (blocking)."""
        self.advance(size)
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._hashed != size:
            raise OSError(f"hashed {self._hashed} bytes of {size}: the file is shorter")
        return self._sha.hexdigest()

    def cancel(self) -> None:
        """Stop hashing and let the thread end (blocking briefly)."""
        with self._cond:
            self._target = self._hashed
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        buffer = bytearray(HASH_BLOCK)
        view = memoryview(buffer)
        try:
            while True:
                with self._cond:
                    while self._hashed >= self._target and not self._closed:
                        self._cond.wait()
                    if self._hashed >= self._target:
                        return
                    target = self._target
                self._hash_up_to(target, view)
        except OSError as exc:
            self._error = exc

    def _hash_up_to(self, target: int, view: memoryview) -> None:
        while self._hashed < target:
            want = min(len(view), target - self._hashed)
            got = os.preadv(self._fd, [view[:want]], self._hashed)
            if got <= 0:
                raise OSError(f"unexpected end of file at byte {self._hashed}")
            self._sha.update(view[:got])
            self._hashed += got
