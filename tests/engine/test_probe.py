"""The primary URL is the authority on the file; mirrors only speed it up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import RetriesExhausted
from tests.faultserver import FaultServer, make_payload
from tests.helpers import leftovers, no_wait, sha256

MakeServer = Callable[[], FaultServer]
DATA = make_payload((1 << 20) + 4321, seed=21)


@pytest.mark.parametrize("count", [1, 2], ids=["one-mirror", "two-mirrors"])
async def test_mirrors_of_another_size_never_replace_the_primary(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, count: int
) -> None:
    primary = make_server()
    primary.add_file("m.bin", DATA)
    mirrors = [make_server() for _ in range(count)]
    for mirror in mirrors:
        mirror.add_file("m.bin", DATA + b"a newer version")
    caplog.set_level(logging.WARNING, logger="asyncfetch")

    result = await asyncfetch.fetch(
        primary.url("m.bin"), tmp_path / "m.bin", mirrors=[m.url("m.bin") for m in mirrors]
    )

    assert (tmp_path / "m.bin").read_bytes() == DATA
    assert result.sha256 == sha256(DATA)
    for mirror in mirrors:
        assert mirror.gets("m.bin") == []  # probed, never downloaded from
        [warning] = [
            r.getMessage() for r in caplog.records if mirror.url("m.bin") in r.getMessage()
        ]
        assert "dropping mirror" in warning
        assert primary.url("m.bin") in warning


async def test_without_the_primary_mirrors_are_not_used_without_a_digest(
    make_server: MakeServer, tmp_path: Path
) -> None:
    primary, mirror = make_server(), make_server()
    mirror.add_file("m.bin", DATA)
    primary_url = primary.url("m.bin")  # 404: no such file there
    policy, _ = no_wait(attempts=2)

    with pytest.raises(RetriesExhausted) as caught:
        await asyncfetch.fetch(
            primary_url, tmp_path / "m.bin", mirrors=[mirror.url("m.bin")], retry=policy
        )

    message = str(caught.value)
    assert primary_url in message
    assert "404" in message
    assert "--sha256" in message
    assert mirror.gets("m.bin") == []
    assert leftovers(tmp_path) == []


async def test_without_the_primary_mirrors_are_used_with_a_digest(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    primary, mirror = make_server(), make_server()
    mirror.add_file("m.bin", DATA)
    caplog.set_level(logging.WARNING, logger="asyncfetch")
    policy, _ = no_wait(attempts=2)

    result = await asyncfetch.fetch(
        primary.url("m.bin"), tmp_path / "m.bin", mirrors=[mirror.url("m.bin")],
        sha256=sha256(DATA), retry=policy,
    )  # fmt: skip

    assert result.sha256 == sha256(DATA)
    assert any(
        "primary URL" in r.getMessage() and "checked against the SHA-256" in r.getMessage()
        for r in caplog.records
    )


async def test_with_a_digest_a_primary_of_unknown_size_leaves_the_size_to_its_mirrors(
    make_server: MakeServer, tmp_path: Path
) -> None:
    primary, mirror = make_server(), make_server()
    primary.add_file("m.bin", DATA)
    mirror.add_file("m.bin", DATA)

    result = await asyncfetch.fetch(
        primary.url("m.bin", no_length=True), tmp_path / "m.bin", mirrors=[mirror.url("m.bin")],
        sha256=sha256(DATA), connections=4, chunk_size=256 << 10,
    )  # fmt: skip

    assert result.sha256 == sha256(DATA)
    assert result.bytes_by_mirror[mirror.url("m.bin")] == len(DATA)
