"""The command line, run as a real subprocess: exit codes, output, bad input."""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from asyncfetch._storage.journal import load
from tests.faultserver import FaultServer, make_payload
from tests.faultserver.rawserver import RawServer, serve_file
from tests.helpers import (
    SPECIAL_KINDS,
    cli_env,
    leftovers,
    make_special,
    read_only,
    run_cli,
    sha256,
    signal_when,
    with_credentials,
)


def test_get_writes_the_file_and_prints_json(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", payload)
    out = tmp_path / "out.bin"

    done = run_cli("get", url, "-o", str(out), "--json", "--sha256", sha256(payload))

    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["sha256"] == sha256(payload)
    assert record["size"] == len(payload)
    assert record["path"] == str(out)
    assert record["bytes_by_mirror"] == {url: len(payload)}
    assert out.read_bytes() == payload
    assert done.stderr == ""  # no bars off a terminal


def test_get_json_names_the_url_for_a_cache_hit_too(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", payload)
    out = tmp_path / "out.bin"
    args = ("get", url, "-o", str(out), "--json", "--sha256", sha256(payload))
    first, hit = run_cli(*args), run_cli(*args)
    assert json.loads(first.stdout)["url"] == url
    record = json.loads(hit.stdout)
    assert record["cached"] is True
    assert record["url"] == url
    assert (record["resumed_bytes"], record["speed"]) == (0, 0)  # nothing resumed or received


def test_a_tiny_download_prints_a_readable_rate(server: FaultServer, tmp_path: Path) -> None:
    url = server.add_file("tiny.bin", b"x" * 100)
    done = run_cli("get", url, "-o", str(tmp_path / "tiny.bin"), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "0.0 MB/s" not in done.stdout
    rate = r" in \d+\.\d\ds( \(\d+(\.\d)? [kMG]?B/s\))? sha256="  # or none at all
    assert re.search(rate, done.stdout), done.stdout


def test_get_json_failure_prints_the_batch_error_object(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.url("nope.bin")
    out = tmp_path / "x.bin"
    done = run_cli("get", url, "-o", str(out), "--json")
    assert done.returncode == 1
    assert done.stderr.startswith("asyncfetch: error: ")
    assert done.stderr.count("\n") == 1
    record = json.loads(done.stdout)
    assert set(record) == {"url", "path", "status", "error", "error_type"}  # as batch --json
    assert record["url"] == url
    assert record["path"] == str(out)
    assert record["status"] == "failed"
    assert record["error_type"] == "HTTPStatusError"
    assert "404" in record["error"]
    assert record["error"] in done.stderr


def test_get_into_a_directory_uses_the_url_name(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url = server.add_file("weights.pt", payload)
    done = run_cli("get", url, "--dir", str(tmp_path), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "weights.pt").read_bytes() == payload
    assert str(tmp_path / "weights.pt") in done.stdout


def test_digest_mismatch_exits_non_zero_and_leaves_nothing(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", payload)
    done = run_cli("get", url, "-o", str(tmp_path / "m.bin"), "--sha256", "0" * 64)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert url in done.stderr
    assert "SHA-256 mismatch" in done.stderr
    assert "check the SHA-256 given" in done.stderr  # it may be the user's typo
    assert leftovers(tmp_path) == []


def test_404_names_the_url(server: FaultServer, tmp_path: Path) -> None:
    url = server.url("nope.bin")
    done = run_cli("get", url, "-o", str(tmp_path / "x"))
    assert done.returncode == 1
    assert url in done.stderr
    assert "404" in done.stderr
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fast_path", ["1", "0"])
def test_credentials_in_the_url_are_used_and_never_shown(
    server: FaultServer, payload: bytes, tmp_path: Path, fast_path: str
) -> None:
    server.add_file("m.bin", payload)
    plain = server.url("m.bin", auth="user:open-sesame")
    out = tmp_path / "m.bin"

    refused = run_cli("get", with_credentials(plain, "user:hunter2"), "-o", str(out),
                      ASYNCFETCH_FAST_PATH=fast_path)  # fmt: skip
    done = run_cli("get", with_credentials(plain, "user:open-sesame"), "-o", str(out), "--json",
                   "--chunk-size", "256K", ASYNCFETCH_FAST_PATH=fast_path)  # fmt: skip

    assert refused.returncode == 1
    assert refused.stderr.startswith(f"asyncfetch: error: {with_credentials(plain, 'user:***')}:")
    assert "HTTP 401" in refused.stderr
    assert "hunter2" not in refused.stderr
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["url"] == with_credentials(plain, "user:***")
    assert "open-sesame@" not in done.stdout + done.stderr
    assert out.read_bytes() == payload
    assert leftovers(tmp_path) == ["m.bin"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["get", "http://127.0.0.1:9/x", "-o", "{tmp}/missing/x"], "does not exist"),
        (["get", "http://127.0.0.1:9/x", "-o", "{tmp}"], "is a directory"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path: Path, args: list[str], message: str) -> None:
    done = run_cli(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert done.returncode == 1, done.stderr
    assert message in done.stderr
    assert done.stderr.startswith("asyncfetch: error: ")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("where", [[], ["--dir", "{tmp}/d"], ["-o", "{tmp}/x"]])
def test_a_malformed_url_is_a_one_line_error_wherever_it_goes(
    tmp_path: Path, where: list[str]
) -> None:
    url = "http://[::1"
    args = (a.replace("{tmp}", str(tmp_path)) for a in where)
    done = run_cli("get", url, *args, TORCH_HOME=str(tmp_path / "torch"))
    assert done.returncode == 2, done.stderr  # a usage error
    assert done.stderr.startswith("usage: asyncfetch get")
    assert done.stderr.endswith(
        f"error: argument url: {url!r} is not a valid URL: Invalid IPv6 URL\n"
    )
    assert leftovers(tmp_path) == []  # no cache directory made for it either


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--connections", "0"], "must be at least 1"),
        (["--chunk-size", "8X"], "unknown size"),
        (["--timeout", "nan"], "must be a positive number of seconds, got 'nan'"),
        (["--timeout", "inf"], "must be a positive number of seconds, got 'inf'"),
        (["--timeout", "-1"], "must be a positive number of seconds, got '-1'"),
        (["--retries", "-1"], "must be at least 0, got -1"),
        (["--chunk-size", "1"], "at least 64K (65536 bytes)"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    done = run_cli("get", "http://127.0.0.1:9/x", "-o", str(tmp_path / "x"), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args", [["--timeout", "nan"], ["--retries", "-1"], ["--chunk-size", "2K"]]
)
def test_bad_batch_options_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    manifest = tmp_path / "m.txt"
    manifest.write_text("http://127.0.0.1:9/x\n")
    done = run_cli("batch", str(manifest), "--dir", str(tmp_path), *args)
    assert done.returncode == 2
    assert f"argument {args[0]}" in done.stderr


@pytest.mark.parametrize("kind", SPECIAL_KINDS)
def test_an_output_that_is_not_a_regular_file_is_refused_untouched(
    server: FaultServer, tmp_path: Path, kind: str
) -> None:
    url = server.add_file("m.bin", b"hello world\n")
    special = make_special(tmp_path / "nulldev", kind)
    kinds = special.stat().st_mode
    done = run_cli("get", url, "-o", str(special))
    assert done.returncode == 1
    assert f"{special} is not a regular file" in done.stderr
    assert special.stat().st_mode == kinds
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nulldev"]


def test_unwritable_directory_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    with read_only(locked):
        done = run_cli("get", "http://127.0.0.1:9/x", "-o", str(locked / "x"))
    assert done.returncode == 1
    assert "not writable" in done.stderr
    assert str(locked) in done.stderr


def test_sigterm_while_the_probe_waits_exits_143_and_leaves_nothing(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("slow.bin", make_payload(1 << 20, seed=4))
    out = tmp_path / "slow.bin"
    argv = [sys.executable, "-m", "asyncfetch", "get", server.url("slow.bin", delay=30), "-o",
            str(out), "--json"]  # fmt: skip
    # the probe waits; no part file yet
    done = signal_when(argv, signal.SIGTERM, lambda: bool(server.requests), timeout=30)
    stdout, stderr = done.stdout, done.stderr

    assert done.returncode == 143, stderr
    assert stderr == "asyncfetch: terminated; run the same command again to resume\n"
    assert stdout == ""
    assert leftovers(tmp_path) == []  # no output, part, lock or temporary file


def test_sigterm_stops_get_like_ctrl_c_and_a_rerun_resumes(
    server: FaultServer, tmp_path: Path
) -> None:
    data = make_payload(2 << 20, seed=3)
    server.add_file("big.bin", data)
    url = server.url("big.bin", rate=200_000, times=2)  # the first run's two requests crawl
    out = tmp_path / "big.bin"
    args = ["get", url, "-o", str(out), "--json", "--connections", "2", "--chunk-size", "1M"]
    done = signal_when(  # as docker stop, timeout or Slurm do, once 200 KB (none written) came
        [sys.executable, "-m", "asyncfetch", *args],
        signal.SIGTERM,
        lambda: server.bytes_served("big.bin") >= 200_000,
        timeout=30,
    )
    stdout, stderr = done.stdout, done.stderr

    assert done.returncode == 143, stderr
    assert stderr == "asyncfetch: terminated; run the same command again to resume\n"
    assert stdout == ""
    (part,) = glob.glob(f"{out}.*.part")
    journal = load(Path(part))
    assert journal is not None
    kept = sum(end - start for start, end in journal.runs)
    assert kept >= 100_000  # what had arrived was written and journaled

    mark = len(server.requests)
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["resumed_bytes"] == kept
    rerun = [r for r in server.requests[mark:] if r.method == "GET"]
    assert all(r.range is not None and r.range[0] > 0 for r in rerun)  # no start over
    assert sum(r.bytes_sent for r in rerun) == len(data) - kept
    assert out.read_bytes() == data
    assert leftovers(tmp_path) == ["big.bin"]


def test_get_speed_limit_cuts_a_trickle_and_resumes_it(server: FaultServer, tmp_path: Path) -> None:
    data = make_payload(256 << 10, seed=5)
    server.add_file("m.bin", data)
    url = server.url("m.bin", rate=2000, times=1)  # the first answer trickles (2 minutes)
    dest = tmp_path / "m.bin"
    done = run_cli("get", url, "-o", str(dest), "--connections", "1", "--speed-limit", "10K",
                   "--speed-time", "1", "--json", timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert dest.read_bytes() == data
    second = [r for r in server.gets("m.bin") if r.range != (0, 0)][1]
    assert second.range is not None
    assert second.range[0] > 0  # resumed from the byte reached


def test_get_refuses_a_speed_limit_that_is_no_speed() -> None:
    done = run_cli("get", "http://127.0.0.1:9/f", "--speed-limit", "fast")
    assert done.returncode == 2
    assert "argument --speed-limit: unknown size" in done.stderr


def test_ctrl_c_without_ranges_says_a_rerun_starts_over_and_the_rerun_says_so(
    tmp_path: Path,
) -> None:
    data = make_payload(2 << 20, seed=6)
    out = tmp_path / "big.bin"

    def written() -> int:
        return sum(Path(p).stat().st_size for p in glob.glob(f"{out}.*.part"))

    with RawServer(serve_file(data, ranges=False, rate=200_000)) as server:
        args = ["get", server.url(), "-o", str(out), "--json"]
        done = signal_when(  # Ctrl-C once 200 KB are in the part
            [sys.executable, "-m", "asyncfetch", *args],
            signal.SIGINT,
            lambda: written() >= 200_000,
            timeout=30,
        )
        assert done.returncode == 130, done.stderr
        assert done.stderr.splitlines()[-1] == (
            "asyncfetch: interrupted; the server does not support ranges, so a rerun starts over"
        )
        assert written()  # the part is kept all the same: a mirror may serve ranges later

        server.answer = serve_file(data, ranges=False)  # at full speed now
        mark = len(server.requests)
        rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "starting over: the server does not support ranges" in rerun.stderr
    assert out.read_bytes() == data
    assert json.loads(rerun.stdout)["resumed_bytes"] == 0
    assert not any(r.range and r.range[0] > 0 for r in server.requests[mark:])  # from byte 0


def _printing_command(command: str, url: str, out: Path) -> tuple[str, ...]:
    """Arguments of a command that prints JSON: ``get URL -o OUT``, or ``cache ls`` of OUT's
    directory once that get has run."""
    get = ("get", url, "-o", str(out), "--json")
    if command == "get":
        return get
    assert run_cli(*get).returncode == 0
    return ("cache", "ls", "--dir", str(out.parent), "--json")


@pytest.mark.parametrize("command", ["get", "cache-ls"])
def test_a_reader_that_leaves_early_gets_no_traceback(
    server: FaultServer, payload: bytes, tmp_path: Path, command: str
) -> None:
    """`asyncfetch ... | head -1`: stdout's reader is gone before the output is written."""
    out = tmp_path / "out.bin"
    args = _printing_command(command, server.add_file("m.bin", payload), out)
    child = subprocess.Popen(
        [sys.executable, "-m", "asyncfetch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    assert child.stdout is not None
    child.stdout.close()  # as `head` does once it has its lines
    _, err = child.communicate(timeout=60)

    assert child.returncode == 141, err  # 128 + SIGPIPE, as a shell reports a piped writer
    assert err.decode() == ""  # no traceback, no "Exception ignored"
    assert out.read_bytes() == payload


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("unbuffered", ["", "1"], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("command", ["get", "cache-ls"])
def test_stdout_on_a_full_disk_is_one_line_not_a_traceback(
    server: FaultServer, payload: bytes, tmp_path: Path, command: str, unbuffered: str
) -> None:
    """`asyncfetch ... --json > FILE` where FILE's disk is full (/dev/full): print-time or
    exit-time, the write fails; the user reads one line saying so, not a traceback."""
    out = tmp_path / "out.bin"
    args = _printing_command(command, server.add_file("m.bin", payload), out)
    with open("/dev/full", "w") as full:
        child = subprocess.run(
            [sys.executable, "-m", "asyncfetch", *args],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(PYTHONUNBUFFERED=unbuffered),
            timeout=60,
            check=False,
        )

    assert child.returncode == 1, child.stderr
    assert child.stderr.splitlines() == [
        "asyncfetch: error: cannot write to standard output: No space left on device; "
        "free space where it goes, or send it elsewhere"
    ]
    assert out.read_bytes() == payload  # the download itself is done and kept


@pytest.mark.parametrize("command", ["get", "cache-ls"])
def test_a_closed_stdout_is_said_not_a_traceback_nor_silence(
    server: FaultServer, payload: bytes, tmp_path: Path, command: str
) -> None:
    """`asyncfetch ... --json >&-`: Python starts with no sys.stdout, where print() says
    nothing at all; the user reads that there was nowhere to print, not a traceback."""
    out = tmp_path / "out.bin"
    args = _printing_command(command, server.add_file("m.bin", payload), out)
    argv = shlex.join([sys.executable, "-m", "asyncfetch", *args])
    child = subprocess.run(
        ["sh", "-c", f"exec {argv} >&-"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )

    assert child.returncode == 1, child.stderr
    assert child.stderr.splitlines() == [
        "asyncfetch: error: standard output is closed; give the command one to print to"
    ]
    assert out.read_bytes() == payload
