"""Usage errors exit 2 with argparse's usage message, for every command, before anything is
downloaded; a mistyped cache directory is an error, and a prune with nothing to do is not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.faultserver import FaultServer, make_payload
from tests.helpers import leftovers, run_cli, sha256

DIGEST = "ab" * 32


@pytest.mark.parametrize(
    "digest", ["abc", "g" * 64, DIGEST + "0", "md5:" + DIGEST, "sha256:", DIGEST[:-1] + " 0"]
)
def test_a_sha256_that_is_not_64_hex_digits_is_a_usage_error(tmp_path: Path, digest: str) -> None:
    done = run_cli("get", "http://127.0.0.1:9/x", "-o", str(tmp_path / "x"), "--sha256", digest)

    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("usage: asyncfetch get")
    assert "argument --sha256:" in done.stderr
    assert "64 hex digits" in done.stderr
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("spelling", "upper"),
    [("{}", True), ("  {}\n", False), ("sha256:{}", False), ("SHA256:{}", True)],
)
def test_a_sha256_in_upper_case_with_spaces_or_a_prefix_is_accepted(
    server: FaultServer, tmp_path: Path, spelling: str, upper: bool
) -> None:
    data = make_payload(10_000, seed=7)
    url = server.add_file("m.bin", data)
    digest = sha256(data)
    given = spelling.format(digest.upper() if upper else digest)

    done = run_cli("get", url, "-o", str(tmp_path / "m.bin"), "--json", "--sha256", given)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sha256"] == digest


@pytest.mark.parametrize(
    "args",
    [
        ["get", "not a url", "-o", "{tmp}/x"],
        ["get", "ftp://127.0.0.1/x", "-o", "{tmp}/x"],
        ["get", "http://[::1/x", "-o", "{tmp}/x"],
        ["get", "http:///x", "-o", "{tmp}/x"],
        ["get", "http://127.0.0.1:9/x", "--mirror", "nonsense", "-o", "{tmp}/x"],
        ["mirrors", "http://127.0.0.1:9/x", "http://[::1/x"],
    ],
)
def test_a_malformed_url_is_a_usage_error(tmp_path: Path, args: list[str]) -> None:
    done = run_cli(*(a.replace("{tmp}", str(tmp_path)) for a in args))

    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"usage: asyncfetch {args[0]}")
    assert leftovers(tmp_path) == []


def test_cache_prune_without_a_criterion_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("cache", "prune", "--dir", str(tmp_path))

    assert done.returncode == 2
    assert done.stderr.startswith("usage: asyncfetch cache prune")
    assert "say what to prune" in done.stderr


def test_a_prune_with_nothing_to_remove_succeeds(tmp_path: Path) -> None:
    done = run_cli("cache", "prune", "--older-than", "30d", "--partials", "--dir", str(tmp_path))

    assert done.returncode == 0, done.stderr
    assert done.stdout == "removed 0 files, 0B\n"


@pytest.mark.parametrize("action", [["ls"], ["verify"], ["prune", "--partials"]])
def test_a_cache_dir_that_does_not_exist_is_an_error_not_an_empty_cache(
    tmp_path: Path, action: list[str]
) -> None:
    missing = tmp_path / "typo"

    done = run_cli("cache", *action, "--dir", str(missing))

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(f"asyncfetch: error: {missing}: no such cache directory")
    assert not missing.exists()
