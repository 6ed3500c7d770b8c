"""An unasked Content-Encoding: which form of the file to keep.

asyncfetch asks for ``Accept-Encoding: identity``; a server that gzips anyway gets one stream,
written as sent (as curl does without ``--compressed``). With an expected SHA-256 the form
that matches it is kept: as sent, else decoded (gzip and deflate can be decoded).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import zlib
from pathlib import Path
from typing import IO

from .._storage.partfile import PartFile

log = logging.getLogger("asyncfetch")

BLOCK = 4 << 20
MAX_RATIO = 100
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def keep_decoded_if_matching(
    sink: PartFile, encoding: str, expected: str, as_sent: str
) -> str:
    """A :data:`~asyncfetch._storage.partfile.Repair` for a part holding ``encoding``-encoded
    bytes whose digest ``as_sent`` is not ``expected``: when the decoded bytes have the
    ``expected`` digest, they replace the part's; returns the part's digest after."""
    decoded = await asyncio.to_thread(_decode, sink.part, encoding, expected)
    if decoded is None:
        return as_sent
    with decoded:
        await sink.restart()
        position = 0
        while chunk := await asyncio.to_thread(decoded.read, BLOCK):
            await sink.write(position, [chunk])
            position += len(chunk)
    log.info("kept the %s-decoded bytes of %s: they match the SHA-256", encoding, sink.dest)
    return await sink.rehash(position)


def _decode(part: Path, encoding: str, expected: str) -> IO[bytes] | None:
    """The decoded bytes of ``part`` in an unnamed temporary file, rewound, when their
    SHA-256 is ``expected``; else None (blocking)."""
    wbits = _WBITS.get(encoding)
    if wbits is None:
        return None
    out = tempfile.TemporaryFile(dir=part.parent)  # noqa: SIM115 (handed to the caller)
    try:
        fd = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as source:
            digest = _decompress(source, out, wbits)
    except (OSError, zlib.error):
        out.close()
        return None
    if digest != expected:
        out.close()
        return None
    out.seek(0)
    return out


def _decompress(source: IO[bytes], out: IO[bytes], wbits: int) -> str:
    """Decompress ``source`` into ``out``, one block at most at a time; the decoded bytes'
    SHA-256. Raises zlib.error for a stream that is not whole, or that inflates past
    MAX_RATIO times its size (a bomb filling the disk)."""
    sha = hashlib.sha256()
    inflate = zlib.decompressobj(wbits)
    taken = given = 0
    while block := source.read(BLOCK):
        taken += len(block)
        while block:
            data = inflate.decompress(block, BLOCK)
            given += len(data)
            if given > MAX_RATIO * taken + BLOCK:
                raise zlib.error(f"inflates more than {MAX_RATIO} times")
            sha.update(data)
            out.write(data)
            block = inflate.unconsumed_tail
    if not inflate.eof:
        raise zlib.error("the stream ended early")
    return sha.hexdigest()
