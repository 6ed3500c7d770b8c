"""SHA-256 of a file while it is being written: a thread hashes the contiguous prefix as it grows.

The hasher reads back from the file (page cache) rather than keeping received bytes around,
so memory stays small whatever the file size or the order bytes arrive in. It maps the file
rather than copying it out with pread: the hash thread is the critical path of a verified
download on a fast link, and the copy cost it ~12% (1 GiB from page cache: 0.95 s by pread,
0.84 s mapped, 0.77 s for the hash alone).

Reading a mapped page past the end of a file raises SIGBUS, so the hasher maps only bytes this
process wrote, and nothing in this process shrinks the part file while a hasher runs (restart,
close and a cancelled rehash stop it first). Another process takes a part over only after its
owner has been silent for two minutes (see ``_parts``); one that truncates the part under a live
download would crash it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import mmap
import os
import threading
import time

HASH_BLOCK = 1 << 20  # what one update() gets: as fast as larger ones
CALIBRATION = 1 << 20  # bytes hashed to know the speed before the file's own
MAP_WINDOW = 8 << 20  # mapped at a time: mapped pages count in RSS, so keep it small
READ_BLOCK = 4 << 20  # read at a time when hashing a whole file that is already there


class PrefixHasher:
    """Hashes bytes ``[0, prefix)`` of an open file in a background thread.

    Call :meth:`advance` whenever the contiguous prefix on disk grows, and :meth:`digest`
    (blocking) once the whole file is written.
    """

    def __init__(self, fd: int, name: str = "asyncfetch-hasher") -> None:
        self._fd = fd
        self._sha = hashlib.sha256()
        self._hashed = 0
        self._busy = 0.0  # seconds spent hashing (not waiting for bytes)
        self._calibrated = 0.0
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

    @property
    def rate(self) -> float:
        """Bytes per second this hasher hashes when bytes are waiting: measured on the file
        once it has hashed some, before that on a scratch block (0 for the first moment)."""
        if self._hashed >= CALIBRATION and self._busy > 0:
            return self._hashed / self._busy
        return self._calibrated

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
        self._calibrate()
        try:
            while True:
                with self._cond:
                    while self._hashed >= self._target and not self._closed:
                        self._cond.wait()
                    if self._hashed >= self._target:
                        return
                    target = self._target
                self._hash_up_to(target)
        except OSError as exc:
            self._error = exc

    def _calibrate(self) -> None:
        """Know the speed before the file's bytes come (see :func:`_scratch_rate`)."""
        self._calibrated = _scratch_rate()

    def _hash_up_to(self, target: int) -> None:
        while self._hashed < min(target, self._target):  # cancel() lowers _target: stop soon
            began = time.perf_counter()
            self._hash_window(target)
            self._busy += time.perf_counter() - began

    def _hash_window(self, target: int) -> None:
        """Hash up to MAP_WINDOW bytes more, towards ``target``."""
        base = self._hashed - self._hashed % mmap.ALLOCATIONGRANULARITY
        length = min(target, base + MAP_WINDOW) - base
        try:
            mapped = mmap.mmap(self._fd, length, access=mmap.ACCESS_READ, offset=base)
        except (OSError, ValueError):  # cannot map (file system; shorter than length)
            self._read_up_to(base + length)
            return
        with mapped, memoryview(mapped) as window:
            self._update(window, self._hashed - base, length)

    def _update(self, window: memoryview, start: int, end: int) -> None:
        for pos in range(start, end, HASH_BLOCK):
            block = window[pos : min(pos + HASH_BLOCK, end)]
            self._sha.update(block)
            self._hashed += len(block)
            block.release()

    def _read_up_to(self, target: int) -> None:
        buffer = memoryview(bytearray(HASH_BLOCK))
        while self._hashed < target:
            want = min(len(buffer), target - self._hashed)
            got = os.preadv(self._fd, [buffer[:want]], self._hashed)
            if got <= 0:
                raise OSError(f"unexpected end of file at byte {self._hashed}")
            self._sha.update(buffer[:got])
            self._hashed += got


@functools.cache
def _scratch_rate() -> float:
    """SHA-256's bytes per second over a scratch block: timed once per process (about a
    millisecond, in the first hasher's thread), not again for every file of a batch."""
    scratch = bytes(CALIBRATION)
    began = time.perf_counter()
    hashlib.sha256(scratch).digest()
    return CALIBRATION / max(time.perf_counter() - began, 1e-9)


def sha256_of_file(file: io.RawIOBase) -> str:
    """The SHA-256 of an open file, read from where it is to its end, as hex (blocking)."""
    sha = hashlib.sha256()
    buffer = bytearray(READ_BLOCK)
    view = memoryview(buffer)
    while got := file.readinto(buffer):
        sha.update(view[:got])
    return sha.hexdigest()
