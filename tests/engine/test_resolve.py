"""Signed URLs: a redirect's expired URL is resolved again; an expired URL without one fails
with the server's message, and a freshly signed URL resumes the part."""

from __future__ import annotations

from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import HTTPStatusError
from tests.faultserver import FaultServer, make_payload
from tests.helpers import no_wait, sha256

SIZE = 1 << 20
CHUNK = 64 << 10


async def test_expired_redirect_target_is_resolved_again_until_done(
    server: FaultServer, tmp_path: Path
) -> None:
    data = make_payload(SIZE, seed=31)
    server.add_file("m.bin", data)
    url = server.url("m.bin", sign=True, expires_after=4 * CHUNK)  # each URL: 4 chunks
    retry, _ = no_wait()

    result = await asyncfetch.fetch(
        url, tmp_path / "m.bin", sha256=sha256(data), connections=2, chunk_size=CHUNK, retry=retry
    )

    assert (tmp_path / "m.bin").read_bytes() == data
    resolves = [r for r in server.requests if "sign" in r.faults]
    assert len(resolves) >= 4  # the first and at least 3 again: 16 chunks at 4 per URL
    refused = [r for r in server.gets("m.bin") if "expired" in r.faults]
    assert refused
    sent = sum(r.bytes_sent for r in server.gets("m.bin"))
    assert sent <= SIZE + 4 * len(resolves)  # nothing fetched twice (the probes: 1 byte each)
    assert result.bytes_by_mirror == {url: SIZE}


async def test_a_source_that_keeps_refusing_is_given_up_after_a_few_resolves(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("m.bin", make_payload(SIZE, seed=32))
    url = server.url("m.bin", sign=True, expires_after=0)  # every fresh URL refuses at once
    retry, _ = no_wait()

    with pytest.raises(HTTPStatusError, match="Request has expired") as caught:
        await asyncfetch.fetch(
            url, tmp_path / "m.bin", connections=1, chunk_size=CHUNK, retry=retry
        )

    assert caught.value.status == 403
    resolves = [r for r in server.requests if "sign" in r.faults]
    assert 2 <= len(resolves) <= 6  # the first probe, then a few in a row, not for ever


def test_expired_url_fails_with_the_servers_message_and_fresh_ones_resume(
    server: FaultServer, tmp_path: Path
) -> None:
    data = make_payload(SIZE, seed=33)
    server.add_file("m.bin", data)
    dest = tmp_path / "m.bin"
    retry, _ = no_wait()
    results, errors = [], []
    for n in range(4):  # each signature is good for 6 chunks: the third run finishes
        url = server.url("m.bin", **{"X-Amz-Signature": f"SIG{n}", "expires_after": 6 * CHUNK})
        try:
            results.append(
                asyncfetch.download(url, dest, connections=1, chunk_size=CHUNK, retry=retry)
            )
            break
        except HTTPStatusError as exc:
            errors.append(exc)

    assert len(errors) == 2
    assert len(results) == 1
    for exc in errors:
        message = str(exc)
        assert "HTTP 403 Forbidden: Request has expired" in message
        assert "freshly signed URL" in message
        assert "resumes" in message
        assert "SIG" not in message
        assert "SIG" not in repr(exc)
    assert dest.read_bytes() == data
    assert results[0].resumed_bytes == 12 * CHUNK
    sent = sum(r.bytes_sent for r in server.gets("m.bin"))
    assert sent <= SIZE + 3  # every byte once (and a 1-byte probe a run)


async def test_a_single_stream_resolves_its_expired_url_again_too(
    server: FaultServer, tmp_path: Path
) -> None:
    data = make_payload(SIZE, seed=34)
    server.add_file("m.bin", data)
    url = server.url(  # the first signed URL breaks at 500K, and has expired when tried again
        "m.bin", sign=True, no_ranges=True, expires_after=400_000, reset_after=500_000,
        times=2, rate=1_000_000,
    )  # fmt: skip
    retry, _ = no_wait()

    await asyncfetch.fetch(url, tmp_path / "m.bin", sha256=sha256(data), retry=retry)

    assert (tmp_path / "m.bin").read_bytes() == data
    assert [r for r in server.gets("m.bin") if "expired" in r.faults]
    assert len([r for r in server.gets("m.bin") if "sign" in r.faults]) == 2  # resolved once more
