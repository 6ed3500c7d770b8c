"""Planted secrets never show: a password with ``@`` in it, presigned query signatures, a
token parameter and a proxy password given without a scheme are searched for in stdout,
stderr, logs, ``--json``, every file left in the destination, cache, config and state
directories, and the ``repr`` of results, events and exceptions."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import hub
from asyncfetch._storage.journal import JOURNAL_VERSION, journal_path
from tests.faultserver import FaultServer, make_payload
from tests.helpers import no_wait, run_cli, sha256

PASSWORD = "s3cr3t@with@ats"
SIGNATURE = "SECRETSIG123"
TOKEN = "SECRETTOKEN"
PROXY_PASSWORD = "PROXYPASS"
SECRETS = (PASSWORD, "s3cr3t", "with@ats", SIGNATURE, "SECRETSIG", TOKEN, PROXY_PASSWORD)
CHUNK = 64 << 10
SIZE = 8 * CHUNK


def signed(server: FaultServer, name: str, signature: str = SIGNATURE, **faults: object) -> str:
    """``name``'s URL with the planted password and a presigned signature in it."""
    url = server.url(name, **{"X-Amz-Signature": signature}, **faults)
    return url.replace("://", f"://user:{PASSWORD}@", 1)


def leaks(*texts: str) -> list[str]:
    """The planted secrets found in ``texts``."""
    return [s for s in SECRETS if any(s in text for text in texts)]


def files_text(root: Path) -> dict[str, str]:
    """Every file under ``root`` as text: its name, its bytes and its extended attributes."""
    return {
        str(path): str(path) + path.read_bytes().decode("latin-1") + _xattrs(path)
        for path in root.rglob("*")
        if path.is_file()
    }


def _xattrs(path: Path) -> str:
    try:
        names = os.listxattr(path)
    except OSError:
        return ""
    return "".join(name + os.getxattr(path, name).decode("latin-1") for name in names)


@pytest.fixture
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Cache, config, state and home directories under ``tmp_path``, for this process and
    the CLI's."""
    env = {
        name: str(tmp_path / name.lower())
        for name in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "TORCH_HOME")
    }
    for name, value in env.items():
        Path(value).mkdir()
        monkeypatch.setenv(name, value)
    return env


def test_the_cli_shows_and_stores_no_secret(
    server: FaultServer, make_server: object, tmp_path: Path, homes: dict[str, str]
) -> None:
    data = make_payload(SIZE, seed=41)
    server.add_file("m.bin", data)
    mirror = signed(server, "gone.bin", TOKEN)  # a 404 mirror
    dest = tmp_path / "out" / "m.bin"
    dest.parent.mkdir()
    common = ("-o", str(dest), "--json", "--no-progress", "--chunk-size", "64K")
    expiring = signed(server, "m.bin", expires_after=3 * CHUNK)

    failed = run_cli("get", expiring, "--mirror", mirror, "--connections", "1", *common)
    done = run_cli("get", signed(server, "m.bin", "SECRETSIG456"), "--mirror", mirror, *common)
    proxied = run_cli(
        "get", signed(server, "m.bin", "SECRETSIG789"), "-o", str(tmp_path / "out" / "p.bin"),
        "--json", "--no-progress", HTTP_PROXY=f"user:{PROXY_PASSWORD}@127.0.0.1:9",
        http_proxy=f"user:{PROXY_PASSWORD}@127.0.0.1:9",
    )  # fmt: skip

    assert failed.returncode != 0
    assert "Request has expired" in failed.stdout
    assert done.returncode == 0, done.stderr
    assert dest.read_bytes() == data
    assert json.loads(done.stdout)["bytes_by_mirror"]
    assert proxied.returncode != 0
    assert "127.0.0.1:9" in proxied.stdout + proxied.stderr
    outputs = [r.stdout + r.stderr for r in (failed, done, proxied)]
    assert "dropping source" in outputs[0]  # the mirror's URL was shown, masked
    assert leaks(*outputs) == []
    assert leaks(*files_text(tmp_path).values()) == []


def test_the_api_shows_and_stores_no_secret(
    server: FaultServer,
    tmp_path: Path,
    homes: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncfetch")
    data = make_payload(SIZE, seed=42)
    server.add_file("m.bin", data)
    mirror = signed(server, "gone.bin", TOKEN)
    events: list[asyncfetch.ProgressEvent] = []
    retry, _ = no_wait()
    shown: list[str] = []

    with pytest.raises(asyncfetch.FetchError) as caught:
        asyncfetch.download(
            signed(server, "m.bin", expires_after=2 * CHUNK), tmp_path / "m.bin",
            mirrors=[mirror], connections=1, chunk_size=CHUNK, retry=retry,
            progress=events.append,
        )  # fmt: skip
    error = caught.value
    shown += [str(error), repr(error), repr(vars(error)), repr(pickle.loads(pickle.dumps(error)))]
    result = asyncfetch.download(
        signed(server, "m.bin", "SECRETSIG2", sign=True), tmp_path / "m.bin",
        mirrors=[mirror], sha256=sha256(data), progress=events.append,
    )  # fmt: skip
    shown += [repr(result), json.dumps(result.as_json(signed(server, "m.bin")))]
    hub.download_url_to_file(signed(server, "m.bin", "SECRETSIG3"), tmp_path / "h.bin")
    sources = [signed(server, "m.bin", "SECRETSIG4"), signed(server, "gone.bin", "SECRETSIG5")]
    batch = asyncio.run(_collect(asyncfetch.fetch_many(sources, dest_dir=tmp_path / "many")))
    batch.sort(key=lambda item: item.index)
    shown += [repr(item) for item in batch]
    assert [item.ok for item in batch] == [True, False]
    out, err = capsys.readouterr()

    assert (tmp_path / "m.bin").read_bytes() == data
    texts = [*shown, *map(repr, events), out, err, caplog.text]
    assert [t for t in texts if leaks(t)] == []
    assert leaks(*files_text(tmp_path).values()) == []


async def _collect(items: AsyncIterator[asyncfetch.BatchItem]) -> list[asyncfetch.BatchItem]:
    return [item async for item in items]


def test_a_journal_an_earlier_version_wrote_with_secrets_is_rewritten_and_resumed(
    server: FaultServer, tmp_path: Path, homes: dict[str, str]
) -> None:
    data = make_payload(SIZE, seed=43)
    server.add_file("m.bin", data)
    _, etag, modified = server.file_info("m.bin")
    dest = tmp_path / "m.bin"
    part = tmp_path / "m.bin.0123abcd.part"
    part.write_bytes(data[: 4 * CHUNK])
    old_url = signed(server, "m.bin").replace(PASSWORD, "***@with@ats")  # as redact() left it
    journal = {
        "url": old_url, "size": SIZE, "etag": etag, "last_modified": modified,
        "runs": [[0, 4 * CHUNK]], "synced": [[0, 4 * CHUNK]], "boot": None, "host": "gone",
        "pid": 1, "version": JOURNAL_VERSION,
    }  # fmt: skip
    journal_path(part).write_text(json.dumps(journal))
    os.utime(journal_path(part), (time.time() - 3600,) * 2)  # its process is long gone
    assert leaks(journal_path(part).read_text())

    result = asyncfetch.download(signed(server, "m.bin", "SECRETSIG9"), dest, connections=1)

    assert dest.read_bytes() == data
    assert result.resumed_bytes == 4 * CHUNK
    assert leaks(*files_text(tmp_path).values()) == []
