"""The model registry: TOML names → sources, which file is read, and ``asyncfetch get NAME``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from asyncfetch import InvalidRequest
from asyncfetch._hub.files import HASH_REGEX, MIN_PREFIX, resolve
from asyncfetch._hub.registry import (
    Entry,
    default_registry_path,
    load_registry,
    looks_like_name,
    lookup,
    registry_path,
)
from tests.faultserver import FaultServer
from tests.helpers import REPO_ROOT, leftovers, run_cli, sha256

EXAMPLE = REPO_ROOT / "examples" / "registry.toml"


@pytest.fixture(autouse=True)
def _no_user_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's own registry, cache and environment out of these tests."""
    monkeypatch.delenv("ASYNCFETCH_REGISTRY", raising=False)
    monkeypatch.delenv("ASYNCFETCH_OFFLINE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def checkpoints(tmp_path: Path) -> Path:
    """The cache directory ``get NAME`` uses without --dir (TORCH_HOME set by the fixture)."""
    return tmp_path / "torch" / "hub" / "checkpoints"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_entries_are_read_with_all_their_fields(tmp_path: Path) -> None:
    registry = write(
        tmp_path / "r.toml",
        '[net]\nurl = "https://example.org/net-12345678.pth"\n'
        'mirrors = ["https://mirror.example.org/net-12345678.pth"]\n'
        f'sha256 = "{"AB" * 32}"\nfile_name = "n.pth"\ncheck_hash = true\n'
        'description = "a net"\n\n'
        '["dotted.name-2"]\nurl = "http://127.0.0.1/x"\n',
    )
    entries = load_registry(registry)
    assert entries["net"] == Entry(
        name="net",
        url="https://example.org/net-12345678.pth",
        mirrors=("https://mirror.example.org/net-12345678.pth",),
        sha256="ab" * 32,
        file_name="n.pth",
        check_hash=True,
        description="a net",
        registry=registry,
    )
    assert entries["dotted.name-2"].url == "http://127.0.0.1/x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[net]\nurl = 'https://x.org/a'\nsha = 'ab'\n", "unknown keys ['sha']"),
        ("[net]\nurl = 'https://x.org/a'\nsha256 = 'abc'\n", "sha256 must be 64 hex digits"),
        ("[net]\nurl = 'x.org/a'\n", "is not a full URL"),
        ("[net]\nurl = 'https://x.org/a'\nmirrors = 'https://y'\n", "mirrors must be a list"),
        ("[net]\nurl = 'https://x.org/a'\nmirrors = ['ftp://y/a']\n", "unsupported scheme"),
        ("[net]\nmirrors = []\n", "url must be a non-empty string"),
        ("[net]\nurl = 'https://x.org/a'\ncheck_hash = 'yes'\n", "check_hash must be true"),
        ("net = 'https://x.org/a'\n", "must be a table"),
        ("[net\nurl = 1\n", "is not valid TOML"),
        ("[net]\nurl = 'https://x.org/a'\nfile_name = '../../escape.bin'\n", "plain file name"),
        ("[net]\nurl = 'https://x.org/a'\nfile_name = 'sub/net.pth'\n", "plain file name"),
        ("[net]\nurl = 'https://x.org/a'\nfile_name = 'sub\\net.pth'\n", "plain file name"),
        ("[net]\nurl = 'https://x.org/a'\nfile_name = '..'\n", "plain file name"),
        ("[net]\nurl = 'https://x.org/a'\nfile_name = '.'\n", "plain file name"),
    ],
)
def test_malformed_registries_say_where_and_what(tmp_path: Path, text: str, message: str) -> None:
    registry = write(tmp_path / "bad.toml", text)
    with pytest.raises(InvalidRequest, match=re.escape(message)) as caught:
        load_registry(registry)
    assert str(registry) in str(caught.value)


def test_a_registry_that_is_not_utf8_is_an_error_naming_it(tmp_path: Path) -> None:
    registry = tmp_path / "latin1.toml"
    registry.write_bytes(b'[n]\nurl = "http://127.0.0.1:1/a"\ndescription = "caf\xe9"\n')
    with pytest.raises(InvalidRequest, match="not UTF-8") as caught:
        load_registry(registry)
    assert str(registry) in str(caught.value)

    done = run_cli("get", "n", "--registry", str(registry))
    assert done.returncode == 1
    assert done.stderr.startswith("asyncfetch: error: registry ")
    assert done.stderr.count("\n") == 1
    assert str(registry) in done.stderr


def test_which_file_explicit_then_environment_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = write(tmp_path / "explicit.toml", "")
    from_env = write(tmp_path / "env.toml", "")
    default = default_registry_path()
    assert default == tmp_path / "config" / "asyncfetch" / "registry.toml"

    assert registry_path() is None  # no default file yet
    default.parent.mkdir(parents=True)
    write(default, "")
    assert registry_path() == default
    monkeypatch.setenv("ASYNCFETCH_REGISTRY", str(from_env))
    assert registry_path() == from_env
    assert registry_path(explicit) == explicit


def test_a_missing_named_registry_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidRequest, match="does not exist"):
        registry_path(tmp_path / "nope.toml")
    monkeypatch.setenv("ASYNCFETCH_REGISTRY", str(tmp_path / "gone.toml"))
    with pytest.raises(InvalidRequest, match=r"registry file .*gone.toml does not exist"):
        registry_path()


def test_unknown_names_list_what_there_is(tmp_path: Path) -> None:
    registry = write(
        tmp_path / "r.toml", "[b]\nurl = 'https://x.org/b'\n[a]\nurl = 'https://x.org/a'\n"
    )
    with pytest.raises(InvalidRequest, match=r"no entry of that name \(entries: a, b\)"):
        lookup("resnet", registry)


def test_a_name_without_any_registry_explains_the_choices() -> None:
    with pytest.raises(InvalidRequest, match="no model registry") as caught:
        lookup("resnet18")
    assert "ASYNCFETCH_REGISTRY" in str(caught.value)
    assert str(default_registry_path()) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "is_name"),
    [
        ("resnet18", True),
        ("vit_b_16.augreg-in21k", True),
        ("https://x.org/a.pth", False),
        ("not a url", False),
        ("dir/file.pth", False),
        ("", False),
    ],
)
def test_what_counts_as_a_name(text: str, is_name: bool) -> None:
    assert looks_like_name(text) is is_name


def test_resolve_merges_the_callers_options(tmp_path: Path) -> None:
    digest = "cd" * 32
    registry = write(
        tmp_path / "r.toml",
        f"[net]\nurl = 'https://x.org/net.pth'\nmirrors = ['https://m1.org/net.pth']\n"
        f"sha256 = '{digest}'\n",
    )
    source = resolve("net", mirrors=["https://m2.org/net.pth"], registry=registry)
    assert source.url == "https://x.org/net.pth"
    assert source.mirrors == ("https://m1.org/net.pth", "https://m2.org/net.pth")
    assert source.sha256 == digest
    with pytest.raises(InvalidRequest, match="contradicts the registry"):
        resolve("net", sha256="ef" * 32, registry=registry)


def test_the_example_registry_is_valid_documentation() -> None:
    entries = load_registry(EXAMPLE)
    assert {"resnet18", "resnet50"} <= set(entries)
    for entry in entries.values():
        assert entry.url.startswith("https://")
        assert entry.sha256 is None  # no digest that nobody measured
        assert entry.check_hash
        match = HASH_REGEX.search(entry.url.rsplit("/", 1)[1])
        assert match is not None
        assert len(match.group(1)) >= MIN_PREFIX


# the command line ---------------------------------------------------------------------------


def test_get_name_downloads_the_entry_checking_its_hash_prefix(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    name = f"weights-{sha256(payload)[:8]}.bin"
    url = server.add_file(name, payload)
    registry = write(tmp_path / "r.toml", f"[weights]\nurl = '{url}'\ncheck_hash = true\n")
    out = tmp_path / "out"
    out.mkdir()

    done = run_cli("get", "weights", "--registry", str(registry), "--dir", str(out), "--json")

    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["path"] == str(out / name)
    assert record["sha256"] == sha256(payload)
    assert (out / name).read_bytes() == payload
    assert leftovers(out) == [name]


def test_get_name_from_the_environment_with_a_bad_prefix_fails(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    wrong = "00000000" if not sha256(payload).startswith("00000000") else "11111111"
    url = server.add_file(f"weights-{wrong}.bin", payload)
    registry = write(tmp_path / "r.toml", f"[weights]\nurl = '{url}'\ncheck_hash = true\n")
    out = tmp_path / "out.bin"

    done = run_cli("get", "weights", "-o", str(out), ASYNCFETCH_REGISTRY=str(registry))

    assert done.returncode == 1
    assert done.stderr.startswith("asyncfetch: error: ")
    assert f"does not start with {wrong}" in done.stderr
    assert url in done.stderr
    assert leftovers(tmp_path) == ["r.toml"]


def test_get_unknown_name_is_a_one_line_error(tmp_path: Path) -> None:
    registry = write(tmp_path / "r.toml", "[a]\nurl = 'https://x.org/a'\n")
    done = run_cli("get", "b", "--registry", str(registry), "-o", str(tmp_path / "b"))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "registry" in done.stderr
    assert "(entries: a)" in done.stderr


def flip_keeping_mtime(path: Path, offset: int = 1000) -> None:
    """Flip one byte of ``path`` in place, keeping size and mtime (bit rot a marker misses)."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_get_name_verify_rehashes_and_replaces_a_corrupt_cached_file(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url = server.add_file("netsha.bin", payload)
    registry = write(
        tmp_path / "r.toml",
        f"[netsha]\nurl = '{url}'\nsha256 = '{sha256(payload)}'\nfile_name = 'netsha.pth'\n",
    )
    cached = checkpoints(tmp_path) / "netsha.pth"
    assert run_cli("get", "netsha", "--registry", str(registry)).returncode == 0
    flip_keeping_mtime(cached)
    trusted = run_cli("get", "netsha", "--registry", str(registry), "--json")
    assert json.loads(trusted.stdout)["cached"] is True  # the marker vouches; not re-read

    done = run_cli("get", "netsha", "--registry", str(registry), "--verify", "--json")

    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["cached"] is False  # re-hashed, found corrupt, downloaded again
    assert record["sha256"] == sha256(payload)
    assert cached.read_bytes() == payload


def test_get_name_offline_uses_only_the_cache(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    prefixed = f"pre-{sha256(payload)[:8]}.bin"
    registry = write(
        tmp_path / "r.toml",
        f"[plain]\nurl = '{server.add_file('plain.bin', payload)}'\n"
        f"[prefixed]\nurl = '{server.add_file(prefixed, payload)}'\ncheck_hash = true\n"
        f"[missing]\nurl = '{server.add_file('missing.bin', payload)}'\n",
    )
    for name in ("plain", "prefixed"):
        assert run_cli("get", name, "--registry", str(registry)).returncode == 0
    server.reset_log()

    plain = run_cli("get", "plain", "--registry", str(registry), "--offline", "--json")
    prefix = run_cli("get", "prefixed", "--registry", str(registry), ASYNCFETCH_OFFLINE="1")
    missing = run_cli("get", "missing", "--registry", str(registry), "--offline")

    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["cached"] is True
    assert prefix.returncode == 0, prefix.stderr
    assert "(cached)" in prefix.stdout
    assert missing.returncode == 1
    assert "offline mode" in missing.stderr
    assert f"{checkpoints(tmp_path) / 'missing.bin'} is not in the cache" in missing.stderr
    assert server.requests == []
    assert leftovers(checkpoints(tmp_path)) == sorted(["plain.bin", prefixed])


def test_get_name_no_hash_skips_the_digest_unless_the_entry_names_one(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    plain_url = server.add_file("plain.bin", payload)
    bad_url = server.add_file("bad.bin", payload)
    registry = write(
        tmp_path / "r.toml",
        f"[plain]\nurl = '{plain_url}'\n[bad]\nurl = '{bad_url}'\nsha256 = '{'0' * 64}'\n",
    )

    plain = run_cli("get", "plain", "--registry", str(registry), "--no-hash", "--json")
    bad = run_cli("get", "bad", "--registry", str(registry), "--no-hash")

    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["sha256"] is None
    assert bad.returncode == 1  # the entry's digest is still checked
    assert "SHA-256 mismatch" in bad.stderr
    assert leftovers(checkpoints(tmp_path)) == ["plain.bin"]


def test_get_name_with_check_hash_is_a_cache_hit_the_second_time(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    name = f"net-{sha256(payload)[:8]}.pth"
    url = server.add_file(name, payload)
    registry = write(tmp_path / "r.toml", f"[net]\nurl = '{url}'\ncheck_hash = true\n")
    first = run_cli("get", "net", "--registry", str(registry), "--json")
    assert json.loads(first.stdout)["cached"] is False, first.stderr
    server.reset_log()

    again = run_cli("get", "net", "--registry", str(registry), "--json")

    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["cached"] is True
    assert server.requests == []
    cached = checkpoints(tmp_path) / name
    flip_keeping_mtime(cached)
    verified = run_cli("get", "net", "--registry", str(registry), "--verify", "--json")
    assert json.loads(verified.stdout)["cached"] is False, verified.stderr
    assert cached.read_bytes() == payload
    assert leftovers(checkpoints(tmp_path)) == [name]


def test_get_name_dir_is_created_when_missing(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url = server.add_file("n.bin", payload)
    registry = write(tmp_path / "r.toml", f"[net]\nurl = '{url}'\n")
    directory = tmp_path / "new" / "sub"

    done = run_cli("get", "net", "--registry", str(registry), "--dir", str(directory))

    assert done.returncode == 0, done.stderr
    assert (directory / "n.bin").read_bytes() == payload


def test_get_name_refuses_a_file_name_outside_the_cache(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url = server.add_file("n.bin", payload)
    registry = write(tmp_path / "r.toml", f"[net]\nurl = '{url}'\nfile_name = '../../escape.bin'\n")

    done = run_cli("get", "net", "--registry", str(registry))

    assert done.returncode == 1
    assert f"registry {registry}, entry [net]: file_name" in done.stderr
    assert not (tmp_path / "torch" / "escape.bin").exists()
    assert server.requests == []


def test_get_name_wrong_sha256_names_the_entry_to_fix(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url = server.add_file("n.bin", payload)
    registry = write(tmp_path / "r.toml", f"[net]\nurl = '{url}'\nsha256 = '{'0' * 64}'\n")

    done = run_cli("get", "net", "--registry", str(registry))

    assert done.returncode == 1
    assert "SHA-256 mismatch" in done.stderr
    assert f"registry {registry}, entry [net]" in done.stderr
    assert leftovers(checkpoints(tmp_path)) == []
