"""Checking the caller's arguments (make_request, and the options of fetch/download/hub/batch):
odd values get a clear InvalidRequest, or are taken the one obvious way."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import InvalidRequest, RetryPolicy, Timeouts
from asyncfetch._engine.request import make_request
from asyncfetch._expectation import expect_sha256
from asyncfetch._options import make_options
from tests.faultserver import FaultServer, make_payload

URL = "http://127.0.0.1:9/m.bin"


def test_a_single_mirror_string_is_one_mirror(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="asyncfetch"):
        request = make_request(URL, "m.bin", make_options(), mirrors="http://127.0.0.1:8/m.bin")
    assert request.urls == (URL, "http://127.0.0.1:8/m.bin")
    assert caplog.records == []


def test_download_uses_a_single_mirror_string(server: FaultServer, tmp_path: Path) -> None:
    data = make_payload(50_000)
    url = server.add_file("m.bin", data)
    gone = server.url("gone.bin")
    result = asyncfetch.download(
        gone, tmp_path / "m.bin", mirrors=url,  # type: ignore[arg-type]
        sha256=hashlib.sha256(data).hexdigest(),  # without the primary, mirrors need one
    )  # fmt: skip
    assert (tmp_path / "m.bin").read_bytes() == data
    assert result.bytes_by_mirror[url] == len(data)


def test_hub_sources_take_a_single_mirror_string() -> None:
    from asyncfetch._hub.files import resolve

    mirror = "http://127.0.0.1:8/m.bin"
    assert resolve(URL, mirrors=mirror).mirrors == (mirror,)


def test_a_size_string_is_a_chunk_size() -> None:
    assert make_options(chunk_size="512K").chunk_size == 512 << 10
    with pytest.raises(InvalidRequest, match="unknown size"):
        make_options(chunk_size="lots")
    with pytest.raises(InvalidRequest, match="chunk_size must be a whole number of bytes"):
        make_options(chunk_size=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("digest", [b"0" * 64, "0" * 63, 42])
def test_sha256_must_be_a_str_of_64_hex_digits(digest: object) -> None:
    with pytest.raises(InvalidRequest, match="sha256 must be a str of 64 hex digits"):
        expect_sha256(digest)  # type: ignore[arg-type]


def test_hub_refuses_a_bytes_sha256(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="sha256 must be a str of 64 hex digits"):
        asyncfetch.download_url_to_file(
            URL,
            tmp_path / "m.bin",
            "abcd",
            sha256=b"a" * 64,  # type: ignore[arg-type]
        )


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), -1.0, 0.0])
def test_timeouts_must_be_positive_and_finite(seconds: float) -> None:
    with pytest.raises(InvalidRequest, match="positive, finite number of seconds"):
        Timeouts(read=seconds)
    with pytest.raises(InvalidRequest, match="positive, finite number of seconds"):
        make_options(timeout=seconds)


@pytest.mark.parametrize("timeout", [(3, 4), True, "5", [5]])
def test_a_timeout_that_is_not_a_number_of_seconds_is_refused(timeout: object) -> None:
    with pytest.raises(InvalidRequest, match=r"timeout must be a number of seconds .* Timeouts"):
        make_options(timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="timeout must be a number of seconds"):
        asyncfetch.fetch_many([URL], timeout=timeout)  # type: ignore[arg-type]


def test_negative_retries_are_refused_by_their_own_number() -> None:
    with pytest.raises(InvalidRequest, match="retries must be a whole number >= 0, got -1"):
        RetryPolicy.coerce(-1)
    assert RetryPolicy.coerce(0).attempts == 1


@pytest.mark.parametrize("size", [1, 2048, "1K", (64 << 10) - 1])
def test_chunk_size_has_a_minimum(size: int | str) -> None:
    with pytest.raises(InvalidRequest, match=r"chunk_size must be at least 64K \(65536 bytes\)"):
        make_options(chunk_size=size)
    with pytest.raises(InvalidRequest, match="at least 64K"):
        asyncfetch.fetch_many([URL], chunk_size=size)  # at once, not per file


def test_the_minimum_chunk_size_is_allowed() -> None:
    assert make_options(chunk_size=64 << 10).chunk_size == 64 << 10
    assert make_options(chunk_size="64K").chunk_size == 64 << 10
