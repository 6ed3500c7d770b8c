"""Always a clear word on stderr: a line per retry wait, warnings on lines of their own beside
the progress bars, and after Ctrl-C a batch summary that tells interrupted from failed."""

from __future__ import annotations

import re
import signal
import socket
import sys
from pathlib import Path

from tests.faultserver import FaultServer, make_payload
from tests.helpers import run_cli, signal_when


def _refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/model.bin"


def test_get_prints_a_line_per_retry_wait(tmp_path: Path) -> None:
    url = _refused_url()

    done = run_cli("get", url, "-o", str(tmp_path / "m.bin"), "--retries", "2")

    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 3, done.stderr
    for number, line in enumerate(lines[:2], 1):
        assert re.fullmatch(
            rf"asyncfetch: warning: {re.escape(url)}: connection failed \(.+\); "
            rf"attempt {number} of 3, waiting \d+\.\d s",
            line,
        ), line
    assert lines[2].startswith(f"asyncfetch: error: {url}: connection failed")


def test_warnings_never_share_a_line_with_a_progress_bar(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("m.bin", make_payload(600_000, seed=5))
    url = server.url("m.bin", rate=400_000, truncate_after=300_000, times=1)

    done = run_cli("get", url, "-o", str(tmp_path / "m.bin"), "--progress", "--connections", "1")

    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.split("\n") if "warning" in line]
    assert lines, done.stderr
    for line in lines:  # tqdm.write clears the bar (\r, spaces, \r) and writes a whole line
        assert re.fullmatch(r"[\r ]*asyncfetch: warning: \S.*", line), repr(line)
    assert "%|" in done.stderr  # a bar was drawn


def test_batch_after_ctrl_c_counts_interrupted_apart_from_failed_and_names_failures(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("ok.bin", make_payload(10_000, seed=1))
    server.add_file("slow.bin", make_payload(4 << 20, seed=2))
    missing = server.url("missing.bin")
    manifest = tmp_path / "urls.txt"
    manifest.write_text(
        "\n".join([server.url("ok.bin"), missing, server.url("slow.bin", rate=100_000)]) + "\n"
    )
    argv = [sys.executable, "-m", "asyncfetch", "batch", str(manifest), "--dir",
            str(tmp_path / "out"), "--no-progress"]  # fmt: skip

    def ready() -> bool:
        finished = {r.path for r in server.requests if r.finished is not None}
        slow_started = server.bytes_served("slow.bin") >= 300_000  # 3 s in: the others are done
        return {"/files/ok.bin", "/files/missing.bin"} <= finished and slow_started

    done = signal_when(argv, signal.SIGINT, ready, timeout=60)

    assert done.returncode == 130, done.stderr
    lines = done.stderr.splitlines()
    assert "asyncfetch: 1 of 3 files ok, 1 failed, 1 interrupted or not started" in lines
    assert any(line.startswith(f"asyncfetch: error: {missing}: HTTP 404") for line in lines)
    assert lines[-1] == "asyncfetch: interrupted; run the same command again to resume"
