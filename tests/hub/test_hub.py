"""The torch.hub drop-ins, against real torch checkpoints served from the loopback server."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import glob
import inspect
import io
import pickle
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.hub
from safetensors.torch import save as save_safetensors

import asyncfetch
from asyncfetch import DestinationError, IntegrityError, InvalidRequest
from asyncfetch._storage.journal import load
from tests.faultserver import FaultServer
from tests.helpers import SPECIAL_KINDS, cli_env, leftovers, make_special, sha256, signal_when

pytestmark = pytest.mark.torch


def torch_bytes(obj: Any, **kwargs: Any) -> bytes:
    """``torch.save(obj)`` as bytes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def state() -> dict[str, torch.Tensor]:
    """A small real state dict (a conv net's), the same every time."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    return model.state_dict()


def assert_same(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(loaded) == list(expected)
    for key, tensor in expected.items():
        assert torch.equal(loaded[key].cpu(), tensor), key


def file_gets(server: FaultServer, name: str) -> int:
    return sum(1 for r in server.gets(name) if r.method == "GET")


# signature ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (asyncfetch.load_state_dict_from_url, torch.hub.load_state_dict_from_url),
        (asyncfetch.download_url_to_file, torch.hub.download_url_to_file),
    ],
)
def test_signature_starts_like_torch_hub(ours: Any, theirs: Any) -> None:
    torch_params = list(inspect.signature(theirs).parameters.values())
    our_params = list(inspect.signature(ours).parameters.values())
    head = our_params[: len(torch_params)]
    assert [p.name for p in head] == [p.name for p in torch_params]
    assert [p.default for p in head] == [p.default for p in torch_params]
    assert [p.kind for p in head] == [p.kind for p in torch_params]
    rest = our_params[len(torch_params) :]
    assert {"mirrors", "sha256"} <= {p.name for p in rest}
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in rest)


# load_state_dict_from_url -------------------------------------------------------------------


def test_downloads_once_then_uses_the_cache(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = state()
    url = server.add_file("net.pth", torch_bytes(expected))

    first = asyncfetch.load_state_dict_from_url(url, model_dir=str(tmp_path))
    gets = file_gets(server, "net.pth")
    second = asyncfetch.load_state_dict_from_url(url, model_dir=str(tmp_path))

    assert_same(first, expected)
    assert_same(second, expected)
    assert gets >= 1
    assert file_gets(server, "net.pth") == gets  # the second call was a cache hit
    assert leftovers(tmp_path) == ["net.pth"]
    out, err = capsys.readouterr()
    assert out == ""  # messages go to stderr, not stdout
    assert f'Downloading: "{url}" to {tmp_path / "net.pth"}' in err
    assert err.count("Downloading:") == 1


def test_uses_the_same_cache_file_as_torch_hub(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    expected = state()
    url = server.add_file("net-1.pth", torch_bytes(expected))

    ours = asyncfetch.load_state_dict_from_url(url, progress=False, weights_only=True)
    requests = len(server.requests)
    theirs = torch.hub.load_state_dict_from_url(url, progress=False, weights_only=True)

    assert (tmp_path / "torch-home" / "hub" / "checkpoints" / "net-1.pth").is_file()
    assert len(server.requests) == requests  # torch.hub found our file and did not download
    assert_same(theirs, ours)


def test_a_file_url_on_a_shared_filesystem_loads_as_torch_hub_loads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    expected = state()
    shared = tmp_path / "nfs" / "models" / "w-1.pth"
    shared.parent.mkdir(parents=True)
    shared.write_bytes(torch_bytes(expected))

    theirs = torch.hub.load_state_dict_from_url(
        shared.as_uri(), model_dir=str(tmp_path / "theirs"), progress=False
    )
    ours = asyncfetch.load_state_dict_from_url(shared.as_uri(), progress=False)

    assert_same(ours, theirs)
    assert (tmp_path / "torch-home" / "hub" / "checkpoints" / "w-1.pth").is_file()


def test_honours_torch_hub_set_dir(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.add_file("n.pth", torch_bytes(state()))
    # Restore torch.hub's own state afterwards, not get_dir()'s answer: set_dir(get_dir())
    # would pin the directory and stop later tests' TORCH_HOME from counting.
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)
    torch.hub.set_dir(str(tmp_path / "hub"))
    asyncfetch.load_state_dict_from_url(url, progress=False)
    assert (tmp_path / "hub" / "checkpoints" / "n.pth").is_file()


def test_file_name_names_the_cache_file(server: FaultServer, tmp_path: Path) -> None:
    url = server.add_file("n.pth", torch_bytes(state()))
    asyncfetch.load_state_dict_from_url(url, str(tmp_path), file_name="other.pth", progress=False)
    assert leftovers(tmp_path) == ["other.pth"]


@pytest.mark.parametrize(
    "map_location",
    ["meta", torch.device("meta"), {"cpu": "meta"}],
    ids=["str", "device", "dict"],
)
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_map_location_places_the_tensors(
    server: FaultServer, tmp_path: Path, map_location: Any, suffix: str
) -> None:
    expected = state()
    body = torch_bytes(expected) if suffix == ".pth" else save_safetensors(expected)
    url = server.add_file("w" + suffix, body)

    loaded = asyncfetch.load_state_dict_from_url(
        url, str(tmp_path), map_location, progress=False, weights_only=True
    )

    assert sorted(loaded) == sorted(expected)
    assert all(t.device.type == "meta" for t in loaded.values())
    assert all(loaded[k].shape == expected[k].shape for k in expected)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_map_location_callable_sees_each_storage(
    server: FaultServer, tmp_path: Path, suffix: str
) -> None:
    expected = state()
    body = torch_bytes(expected) if suffix == ".pth" else save_safetensors(expected)
    url = server.add_file("w" + suffix, body)
    seen: list[str] = []

    def zeroed_copy(storage: Any, location: str) -> Any:
        seen.append(location)
        copy = storage.clone()
        copy.fill_(0)
        return copy

    loaded = asyncfetch.load_state_dict_from_url(
        url, str(tmp_path), zeroed_copy, progress=False, weights_only=True
    )

    assert seen
    assert set(seen) == {"cpu"}
    assert sorted(loaded) == sorted(expected)
    for key, tensor in expected.items():
        assert loaded[key].shape == tensor.shape
        assert not loaded[key].any(), key  # the storage the callable returned is the one used


def test_safetensors_load_as_a_state_dict(server: FaultServer, tmp_path: Path) -> None:
    expected = state()
    url = server.add_file("model.safetensors", save_safetensors(expected))
    loaded = asyncfetch.load_state_dict_from_url(url, str(tmp_path), progress=False)
    assert sorted(loaded) == sorted(expected)
    for key, tensor in expected.items():
        assert torch.equal(loaded[key], tensor)


def test_legacy_zip_checkpoints_load_like_torch_hub(server: FaultServer, tmp_path: Path) -> None:
    expected = state()
    legacy = torch_bytes(expected, _use_new_zipfile_serialization=False)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("inner.pth", legacy)
    url = server.add_file("old.pth", archive.getvalue())

    with pytest.warns(FutureWarning, match="legacy zip"):
        loaded = asyncfetch.load_state_dict_from_url(url, str(tmp_path), progress=False)

    assert_same(loaded, expected)
    assert leftovers(tmp_path) == ["inner.pth", "old.pth"]  # extracted beside it, as torch.hub


def test_weights_only_refuses_a_pickle_and_false_allows_it(
    server: FaultServer, tmp_path: Path
) -> None:
    checkpoint = {"state_dict": state(), "args": argparse.Namespace(lr=0.1)}
    url = server.add_file("with-args.pth", torch_bytes(checkpoint))

    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        asyncfetch.load_state_dict_from_url(url, str(tmp_path), progress=False, weights_only=True)
    loaded = asyncfetch.load_state_dict_from_url(
        url, str(tmp_path), progress=False, weights_only=False
    )

    assert loaded["args"] == argparse.Namespace(lr=0.1)
    assert_same(loaded["state_dict"], checkpoint["state_dict"])


def test_weights_only_true_loads_plain_tensors(server: FaultServer, tmp_path: Path) -> None:
    expected = state()
    url = server.add_file("plain.pth", torch_bytes(expected))
    loaded = asyncfetch.load_state_dict_from_url(url, str(tmp_path), weights_only=True)
    assert_same(loaded, expected)


# hashes -------------------------------------------------------------------------------------


def test_check_hash_accepts_a_matching_prefix(server: FaultServer, tmp_path: Path) -> None:
    body = torch_bytes(state())
    name = f"net-{sha256(body)[:10]}.pth"
    url = server.add_file(name, body)
    loaded = asyncfetch.load_state_dict_from_url(url, str(tmp_path), check_hash=True)
    assert_same(loaded, state())
    assert leftovers(tmp_path) == [name]


def test_check_hash_rejects_a_wrong_prefix_and_leaves_nothing(
    server: FaultServer, tmp_path: Path
) -> None:
    body = torch_bytes(state())
    wrong = "0123abcd" if not sha256(body).startswith("0123abcd") else "fedc4321"
    url = server.add_file(f"net-{wrong}.pth", body)

    with pytest.raises(IntegrityError, match=f"does not start with {wrong}") as caught:
        asyncfetch.load_state_dict_from_url(url, str(tmp_path), check_hash=True)

    assert url in str(caught.value)
    assert isinstance(caught.value, RuntimeError)  # what torch.hub raises there
    assert leftovers(tmp_path) == []  # neither the target nor the unverified download


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("net.pth", "carries no SHA-256 prefix"),
        ("net-.pth", "empty SHA-256 prefix"),
        ("net-abc123.pth", "only 6 hex digits"),
    ],
)
def test_check_hash_without_a_usable_prefix_is_an_error(
    server: FaultServer, tmp_path: Path, name: str, reason: str
) -> None:
    url = server.add_file(name, torch_bytes(state()))
    with pytest.raises(InvalidRequest, match=reason) as caught:
        asyncfetch.load_state_dict_from_url(url, str(tmp_path), check_hash=True)
    assert name in str(caught.value)
    assert server.requests == []  # refused before downloading anything


def test_full_sha256_is_verified(server: FaultServer, tmp_path: Path) -> None:
    url = server.add_file("net.pth", torch_bytes(state()))
    with pytest.raises(IntegrityError, match="SHA-256 mismatch"):
        asyncfetch.load_state_dict_from_url(url, str(tmp_path), sha256="0" * 64)
    assert leftovers(tmp_path) == []


def test_a_cached_file_that_fails_its_sha256_is_downloaded_again(
    server: FaultServer, tmp_path: Path
) -> None:
    body = torch_bytes(state())
    url = server.add_file("net.pth", body)
    (tmp_path / "net.pth").write_bytes(b"corrupt")

    loaded = asyncfetch.load_state_dict_from_url(url, str(tmp_path), sha256=sha256(body))

    assert_same(loaded, state())
    assert (tmp_path / "net.pth").read_bytes() == body


@pytest.mark.parametrize("via", ["url", "registry"])
def test_check_hash_downloads_again_a_cached_file_whose_digest_does_not_fit_its_name(
    server: FaultServer, tmp_path: Path, via: str
) -> None:
    body = torch_bytes(state())
    name = f"net-{sha256(body)[:10]}.pth"
    url = server.add_file(name, body)
    (tmp_path / name).write_bytes(torch_bytes({"w": torch.zeros(3)}))  # another checkpoint
    registry = tmp_path / "registry.toml"
    registry.write_text(f'[net]\nurl = "{url}"\ncheck_hash = true\n')
    asked = dict(url=url, check_hash=True) if via == "url" else dict(url="net", registry=registry)

    for _ in range(2):  # the second time, the marker vouches for the file: no re-hash, no GET
        loaded = asyncfetch.load_state_dict_from_url(model_dir=str(tmp_path), **asked)  # type: ignore[arg-type]
        assert_same(loaded, state())
        assert file_gets(server, name) == 1
    assert (tmp_path / name).read_bytes() == body


def test_check_hash_uses_a_cached_file_whose_digest_fits_its_name(
    server: FaultServer, tmp_path: Path
) -> None:
    body = torch_bytes(state())
    name = f"net-{sha256(body)[:10]}.pth"
    url = server.add_file(name, b"not what is cached")
    (tmp_path / name).write_bytes(body)  # as torch.hub left it: no marker
    loaded = asyncfetch.load_state_dict_from_url(url, str(tmp_path), check_hash=True)
    assert_same(loaded, state())
    assert server.requests == []


def test_a_cached_file_without_sha256_is_used_as_is(server: FaultServer, tmp_path: Path) -> None:
    url = server.add_file("net.pth", b"not what the server has")
    (tmp_path / "net.pth").write_bytes(torch_bytes(state()))
    loaded = asyncfetch.load_state_dict_from_url(url, str(tmp_path))
    assert_same(loaded, state())
    assert server.requests == []


# sources ------------------------------------------------------------------------------------


def test_mirrors_serve_when_the_primary_fails(
    server: FaultServer, make_server: Any, tmp_path: Path
) -> None:
    body = torch_bytes(state())
    mirror = make_server()
    server.add_file("net.pth", body)
    broken = server.url("net.pth", status=404)
    good = mirror.add_file("net.pth", body)

    loaded = asyncfetch.load_state_dict_from_url(
        broken, str(tmp_path), mirrors=[good], sha256=sha256(body)
    )

    assert_same(loaded, state())
    assert mirror.bytes_served("net.pth") >= len(body)


def test_a_registry_name_instead_of_a_url(server: FaultServer, tmp_path: Path) -> None:
    url = server.add_file("net-v1.pth", torch_bytes(state()))
    registry = tmp_path / "registry.toml"
    registry.write_text(f'[tiny-net]\nurl = "{url}"\nfile_name = "tiny.pth"\n')
    cache = tmp_path / "cache"

    loaded = asyncfetch.load_state_dict_from_url("tiny-net", str(cache), registry=registry)

    assert_same(loaded, state())
    assert leftovers(cache) == ["tiny.pth"]


# download_url_to_file -----------------------------------------------------------------------


def test_download_url_to_file_with_a_hash_prefix(server: FaultServer, tmp_path: Path) -> None:
    body = torch_bytes(state())
    url = server.add_file("f.bin", body)
    dst = tmp_path / "out.bin"
    asyncfetch.download_url_to_file(url, str(dst), sha256(body)[:12], progress=False)
    assert dst.read_bytes() == body
    assert leftovers(tmp_path) == ["out.bin"]


def test_download_url_to_file_wrong_prefix_leaves_nothing(
    server: FaultServer, tmp_path: Path
) -> None:
    body = torch_bytes(state())
    url = server.add_file("f.bin", body)
    wrong = "ab" if not sha256(body).startswith("ab") else "cd"
    with pytest.raises(IntegrityError, match="invalid hash value"):
        asyncfetch.download_url_to_file(url, str(tmp_path / "out.bin"), wrong, progress=False)
    assert leftovers(tmp_path) == []


def test_a_wrong_prefix_raises_what_torch_hub_raises_too(
    server: FaultServer, tmp_path: Path
) -> None:
    body = torch_bytes(state())
    url = server.add_file("f.bin", body)
    wrong = "ab" if not sha256(body).startswith("ab") else "cd"
    with pytest.raises(RuntimeError, match="invalid hash value"):
        torch.hub.download_url_to_file(url, str(tmp_path / "torch.bin"), wrong, progress=False)
    with pytest.raises(RuntimeError, match="invalid hash value") as caught:  # except RuntimeError
        asyncfetch.download_url_to_file(url, str(tmp_path / "ours.bin"), wrong, progress=False)
    assert isinstance(caught.value, asyncfetch.HashPrefixMismatch)
    assert isinstance(caught.value, IntegrityError)  # and still the asyncfetch error it was
    assert (caught.value.expected, caught.value.actual) == (wrong, sha256(body))
    again = pickle.loads(pickle.dumps(caught.value))
    assert type(again) is asyncfetch.HashPrefixMismatch
    assert (str(again), vars(again)) == (str(caught.value), vars(caught.value))


def test_download_url_to_file_replaces_a_same_size_file_it_did_not_download(
    server: FaultServer, tmp_path: Path
) -> None:
    body = torch_bytes(state())
    url = server.add_file("f.bin", body)
    dst = tmp_path / "A5.pth"
    dst.write_bytes(b"x" * len(body))  # same size, other bytes, no marker: torch.hub's or not

    asyncfetch.download_url_to_file(url, str(dst), progress=False)
    assert dst.read_bytes() == body
    assert file_gets(server, "f.bin") >= 1

    before = file_gets(server, "f.bin")
    asyncfetch.download_url_to_file(url, str(dst), progress=False)  # vouched for: a hit
    assert file_gets(server, "f.bin") == before
    assert dst.read_bytes() == body


def test_download_url_to_file_with_a_prefix_replaces_a_file_that_happens_to_match_it(
    server: FaultServer, tmp_path: Path
) -> None:
    body = torch_bytes(state())
    url = server.add_file("f.bin", body)
    prefix = sha256(body)[:1]
    junk = next(j for j in (b"junk %d" % n for n in range(10_000)) if sha256(j).startswith(prefix))
    dst = tmp_path / "A5.pth"
    dst.write_bytes(junk)  # another file whose digest starts with the same hex digit

    asyncfetch.download_url_to_file(url, str(dst), prefix, progress=False)

    assert dst.read_bytes() == body  # as torch.hub: downloaded, whatever was there
    assert file_gets(server, "f.bin") >= 1


@pytest.mark.parametrize("prefix", ["xyz", "a" * 65, b"ab"])
def test_download_url_to_file_bad_prefix_is_refused(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(InvalidRequest, match="hash_prefix must be"):
        asyncfetch.download_url_to_file("http://127.0.0.1:9/f", str(tmp_path / "f"), prefix)


@pytest.mark.parametrize("url", ["http://[::1/x.pth", "http://[::1"])
def test_a_malformed_url_is_an_invalid_request_naming_it(tmp_path: Path, url: str) -> None:
    entries = {
        "load_state_dict_from_url": lambda: asyncfetch.load_state_dict_from_url(
            url, model_dir=str(tmp_path), progress=False
        ),
        "download_url_to_file": lambda: asyncfetch.download_url_to_file(
            url, str(tmp_path / "f"), progress=False
        ),
    }
    for entry, call in entries.items():
        with pytest.raises(InvalidRequest, match="is not a valid URL") as caught:
            call()
        assert url in str(caught.value), entry
        assert caught.value.url == url, entry
    assert leftovers(tmp_path) == []


def test_download_url_to_file_empty_prefix_checks_nothing_as_torch_hub(
    server: FaultServer, tmp_path: Path
) -> None:
    body = torch_bytes(state())
    url = server.add_file("f.bin", body)
    for tool in (torch.hub.download_url_to_file, asyncfetch.download_url_to_file):
        dst = tmp_path / f"{tool.__module__.split('.')[0]}.bin"
        tool(url, str(dst), "", progress=False)
        assert dst.read_bytes() == body
    assert leftovers(tmp_path) == ["asyncfetch.bin", "torch.bin"]


@pytest.mark.parametrize("kind", SPECIAL_KINDS)
@pytest.mark.parametrize("entry", ["plain", "hash_prefix", "load_state_dict_from_url"])
def test_a_target_that_is_not_a_regular_file_is_refused_untouched(
    server: FaultServer, tmp_path: Path, kind: str, entry: str
) -> None:
    body = torch_bytes(state())
    url = server.add_file("f.bin", body)
    special = make_special(tmp_path / "f.bin", kind)
    kinds = special.stat().st_mode
    prefix = sha256(body)[:8] if entry == "hash_prefix" else None

    def call() -> object:
        if entry == "load_state_dict_from_url":
            return asyncfetch.load_state_dict_from_url(url, str(tmp_path), progress=False)
        return asyncfetch.download_url_to_file(url, special, prefix, progress=False)

    with pytest.raises(DestinationError, match="is not a regular file"):
        call()
    assert special.stat().st_mode == kinds
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    assert server.requests == []


# where it is called from --------------------------------------------------------------------


def test_works_inside_a_running_event_loop(server: FaultServer, tmp_path: Path) -> None:
    url = server.add_file("net.pth", torch_bytes(state()))

    async def notebook_cell() -> dict[str, torch.Tensor]:
        await asyncio.sleep(0)
        return asyncfetch.load_state_dict_from_url(url, str(tmp_path), progress=False)

    assert_same(asyncio.run(notebook_cell()), state())


def test_threads_at_once_download_once_and_all_load(server: FaultServer, tmp_path: Path) -> None:
    body = torch_bytes(state())
    server.add_file("net.pth", body)
    url = server.url("net.pth", rate=2 << 20)  # slow enough for the calls to overlap

    def load() -> dict[str, torch.Tensor]:
        return asyncfetch.load_state_dict_from_url(url, str(tmp_path), progress=False)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = [f.result(timeout=60) for f in [pool.submit(load) for _ in range(4)]]

    for loaded in results:
        assert_same(loaded, state())
    assert server.bytes_served("net.pth") <= len(body) + 1  # one download (plus a probe byte)
    assert leftovers(tmp_path) == ["net.pth"]


# Ctrl-C -------------------------------------------------------------------------------------

INTERRUPTED_LOAD = """
import asyncio, signal, sys
import asyncfetch

url, model_dir, where = sys.argv[1:]

def load():
    asyncfetch.load_state_dict_from_url(url, model_dir, progress=False, connections=2)

async def notebook_cell():
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as Jupyter's kernel has it
    load()

load() if where == "script" else asyncio.run(notebook_cell())
"""


@pytest.mark.parametrize("where", ["script", "notebook"])
def test_ctrl_c_keeps_the_bytes_and_a_rerun_fetches_the_rest(
    server: FaultServer, tmp_path: Path, where: str
) -> None:
    weights = {"w": torch.arange(600_000, dtype=torch.float32)}
    body = torch_bytes(weights)
    server.add_file("big.pth", body)
    url = server.url("big.pth", rate=200_000, times=2)  # the first run's two requests crawl
    stderr = signal_when(  # Ctrl-C once 200 KB came, none written yet (1 MiB)
        [sys.executable, "-c", INTERRUPTED_LOAD, url, str(tmp_path), where],
        signal.SIGINT,
        lambda: server.bytes_served("big.pth") >= 200_000,
    ).stderr

    assert "KeyboardInterrupt" in stderr
    (part,) = glob.glob(f"{tmp_path / 'big.pth'}.*.part")
    journal = load(Path(part))
    assert journal is not None
    kept = sum(end - start for start, end in journal.runs)
    assert kept >= 100_000  # what had arrived was written and journaled

    mark = len(server.requests)
    loaded = asyncfetch.load_state_dict_from_url(url, str(tmp_path), progress=False)
    assert_same(loaded, weights)
    rerun = [r for r in server.requests[mark:] if r.method == "GET"]
    assert all(r.range is not None and r.range[0] > 0 for r in rerun)  # no start over
    assert sum(r.bytes_sent for r in rerun) == len(body) - kept
    assert leftovers(tmp_path) == ["big.pth"]


# lightness and GPU --------------------------------------------------------------------------


def test_import_and_cli_get_do_not_import_torch(server: FaultServer, tmp_path: Path) -> None:
    url = server.add_file("f.bin", b"x" * 1000)
    code = (
        "import sys, asyncfetch, asyncfetch._cli.main as cli\n"
        "assert 'torch' not in sys.modules, 'import asyncfetch imported torch'\n"
        f"assert cli.main(['get', {url!r}, '-o', {str(tmp_path / 'f.bin')!r}]) == 0\n"
        "assert 'torch' not in sys.modules, 'asyncfetch get imported torch'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "f.bin").read_bytes() == b"x" * 1000


def to_first_gpu(storage: Any, location: str) -> Any:
    """A torch.load-style map_location callable: every storage onto cuda:0."""
    return storage.cuda(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "map_location",
    ["cuda:0", torch.device("cuda", 0), {"cpu": "cuda:0"}, to_first_gpu],
    ids=["str", "device", "dict", "callable"],
)
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_map_location_cuda(
    server: FaultServer, tmp_path: Path, map_location: Any, suffix: str
) -> None:
    expected = state()
    body = torch_bytes(expected) if suffix == ".pth" else save_safetensors(expected)
    url = server.add_file("w" + suffix, body)
    loaded = asyncfetch.load_state_dict_from_url(
        url, str(tmp_path), map_location, progress=False, weights_only=True
    )
    assert sorted(loaded) == sorted(expected)  # safetensors keeps its own key order
    assert all(t.device == torch.device("cuda:0") for t in loaded.values())
    for key, tensor in expected.items():
        assert torch.equal(loaded[key].cpu(), tensor), key


def test_public_names_are_exported_once_and_sorted() -> None:
    for name in ("load_state_dict_from_url", "download_url_to_file", "load_pretrained"):
        assert name in asyncfetch.__all__
        assert getattr(asyncfetch, name) is getattr(asyncfetch.hub, name)
    assert {"LoadReport", "CheckpointMismatch"} <= set(asyncfetch.__all__)
    assert asyncfetch.__all__ == sorted(asyncfetch.__all__)
    assert len(set(asyncfetch.__all__)) == len(asyncfetch.__all__)
