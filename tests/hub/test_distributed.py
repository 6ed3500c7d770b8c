"""One download per node: the lock-and-wait protocol, and a real torchrun job (gloo, CPU)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from asyncfetch import (
    CheckpointMismatch,
    FetchError,
    HTTPStatusError,
    IntegrityError,
    OfflineError,
    RetriesExhausted,
)
from asyncfetch._hub.distributed import (
    SINGLE,
    NodeRole,
    failure_path,
    node_lock_path,
    once_per_node,
    role_from_env,
)
from tests.faultserver import FaultServer
from tests.helpers import cli_env

LEADER = NodeRole(rank=0, local_rank=0, world_size=2)
FOLLOWER = NodeRole(rank=1, local_rank=1, world_size=2)
JOIN_S = 20.0


class Call(threading.Thread):
    """once_per_node in a thread, keeping its result or error."""

    def __init__(self, target: Path, ensure: Callable[[], str], role: NodeRole, **kw: float):
        super().__init__(daemon=True)
        self.args_ = (target, ensure, role)
        self.kw = kw
        self.result: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = once_per_node(*self.args_, **self.kw)
        except BaseException as exc:
            self.error = exc

    def finish(self) -> Call:
        self.join(JOIN_S)
        assert not self.is_alive(), "once_per_node did not return"
        return self


def test_followers_wait_for_local_rank_0_then_use_its_file(tmp_path: Path) -> None:
    target = tmp_path / "w.pth"
    events: list[str] = []

    def download() -> str:
        time.sleep(0.5)
        target.write_bytes(b"weights")
        events.append("leader downloaded")
        return "downloaded"

    def follower_ensure() -> str:
        events.append(f"follower saw the file: {target.exists()}")
        return "hit"

    followers = [Call(target, follower_ensure, FOLLOWER) for _ in range(3)]
    for follower in followers:
        follower.start()
    time.sleep(0.2)  # the followers are waiting before the leader even starts
    leader = Call(target, download, LEADER)
    leader.start()

    assert leader.finish().result == "downloaded"
    assert [f.finish().result for f in followers] == ["hit"] * 3
    assert events == ["leader downloaded"] + ["follower saw the file: True"] * 3


def test_a_follower_takes_over_when_no_leader_comes(tmp_path: Path) -> None:
    target = tmp_path / "w.pth"
    started = time.monotonic()

    def download() -> str:
        target.write_bytes(b"weights")
        return "downloaded"

    assert once_per_node(target, download, FOLLOWER, grace=0.3) == "downloaded"
    assert time.monotonic() - started >= 0.3


def test_a_failed_leader_fails_the_waiting_followers_at_once(tmp_path: Path) -> None:
    target = tmp_path / "w.pth"

    def broken() -> str:
        time.sleep(0.3)
        raise ValueError("404 from the server")

    follower = Call(target, lambda: "never", FOLLOWER, grace=60.0)
    follower.start()
    leader = Call(target, broken, LEADER)
    leader.start()

    assert isinstance(leader.finish().error, ValueError)
    error = follower.finish().error
    assert isinstance(error, FetchError)
    assert "local rank 0" in str(error)
    assert "404 from the server" in str(error)
    assert str(target) in str(error)


LEADER_ERRORS = [
    HTTPStatusError("http://h/w.pth: HTTP 404", url="http://h/w.pth", status=404),
    OfflineError("offline and not cached", path="/c/w.pth", url="http://h/w.pth"),
    IntegrityError("bad digest", url="http://h/w.pth", expected="ab" * 32, actual="cd" * 32),
    RetriesExhausted(
        "gave up", url="http://h/w.pth", byte_range=(0, 10), attempts=5, failures={"u": "reset"}
    ),
    CheckpointMismatch("nothing fits", url="http://h/w.pth", report=object()),
]


@pytest.mark.parametrize("raised", LEADER_ERRORS, ids=lambda e: type(e).__name__)
def test_followers_raise_the_leaders_error_class_with_its_attributes(
    tmp_path: Path, raised: FetchError
) -> None:
    target = tmp_path / "w.pth"

    def broken() -> str:
        time.sleep(0.2)
        raise raised

    follower = Call(target, lambda: "never", FOLLOWER, grace=60.0)
    follower.start()
    Call(target, broken, LEADER).start()

    error = follower.finish().error
    assert type(error) is type(raised)
    assert str(raised) in str(error)
    assert "local rank 0" in str(error)
    expected = {k: None if k == "report" else v for k, v in vars(raised).items()}
    assert vars(error) == expected  # a report object cannot travel as JSON


def test_an_unknown_leader_error_is_a_fetch_error_and_nothing_is_unpickled(
    tmp_path: Path,
) -> None:
    target = tmp_path / "w.pth"
    note = {"pid": 7, "error": "Popen", "message": "x", "attributes": {"url": "http://h/"}}
    failure_path(target).write_text(json.dumps(note))

    error = Call(target, lambda: "never", FOLLOWER, grace=60.0)
    error.start()

    raised = error.finish().error
    assert type(raised) is FetchError
    assert raised.url is None


def test_an_old_failure_note_is_ignored(tmp_path: Path) -> None:
    target = tmp_path / "w.pth"
    note = failure_path(target)
    note.write_text(json.dumps({"pid": 1, "error": "ValueError", "message": "old"}))
    os.utime(note, (time.time() - 3600, time.time() - 3600))

    def download() -> str:
        target.write_bytes(b"weights")
        return "downloaded"

    assert once_per_node(target, download, FOLLOWER, grace=0.1) == "downloaded"


def test_a_failure_note_is_never_written_through_a_planted_link(tmp_path: Path) -> None:
    target = tmp_path / "w.pth"
    victim = tmp_path / "precious.txt"
    victim.write_text("precious")
    failure_path(target).with_suffix(f".{os.getpid()}.tmp").symlink_to(victim)

    def broken() -> str:
        raise ValueError("404 from the server")

    with pytest.raises(ValueError, match="404"):
        once_per_node(target, broken, LEADER)

    assert victim.read_text() == "precious"


def test_a_leader_success_clears_an_old_failure_note(tmp_path: Path) -> None:
    target = tmp_path / "w.pth"
    failure_path(target).write_text("{}")
    once_per_node(target, lambda: target.write_bytes(b"w"), LEADER)
    assert not failure_path(target).exists()


def test_outside_a_job_nothing_is_locked(tmp_path: Path) -> None:
    target = tmp_path / "w.pth"
    assert once_per_node(target, lambda: "ran", SINGLE) == "ran"
    assert not node_lock_path(target).exists()


def test_role_from_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert role_from_env() == SINGLE
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    role = role_from_env()
    assert role == NodeRole(rank=5, local_rank=1, world_size=8)
    assert role.distributed
    assert not role.leader
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert role_from_env().leader  # local rank 0 of another node leads there


# a real torchrun job ------------------------------------------------------------------------

RANK_SCRIPT = """
import datetime, hashlib, json, os, sys, time
import torch.distributed as dist
import asyncfetch

url, model_dir, out = sys.argv[1:4]
dist.init_process_group("gloo")
quick = dist.new_group(timeout=datetime.timedelta(seconds=3))  # shorter than the download
started = time.monotonic()
state = asyncfetch.load_state_dict_from_url(
    url, model_dir=model_dir, progress=False, weights_only=True, connections=2
)
waited = time.monotonic() - started
digest = hashlib.sha256()
for key, tensor in state.items():
    digest.update(key.encode())
    digest.update(tensor.numpy().tobytes())
dist.barrier(group=quick)  # every rank arrives together: nobody was left behind
rank = dist.get_rank()
with open(os.path.join(out, f"rank{rank}.json"), "w") as file:
    json.dump({"rank": rank, "digest": digest.hexdigest(), "waited": waited}, file)
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
@pytest.mark.torch
def test_torchrun_four_ranks_one_download_four_identical_loads(
    server: FaultServer, tmp_path: Path
) -> None:
    import torch

    torch.manual_seed(0)
    state = {"encoder.weight": torch.randn(256, 1024), "encoder.bias": torch.randn(256)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    body = buffer.getvalue()
    server.add_file("shared.pth", body)
    url = server.url("shared.pth", rate=200_000)  # ~5 s over two connections
    expected = hashlib.sha256()
    for key, tensor in state.items():
        expected.update(key.encode())
        expected.update(tensor.numpy().tobytes())
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    cache, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "4",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(_free_port()),
            str(script),
            url,
            str(cache),
            str(out),
        ],  # fmt: skip
        env=cli_env(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", TORCH_HOME=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    assert sorted(r["rank"] for r in ranks) == [0, 1, 2, 3]
    assert {r["digest"] for r in ranks} == {expected.hexdigest()}  # four identical loads
    assert max(r["waited"] for r in ranks) > 3  # outlasted the group's 3 s timeout
    probes = [r for r in server.requests if r.method == "HEAD"]
    assert len(probes) == 1  # one process looked at the file ...
    # ... and downloaded it, once (a range cut short by work stealing may waste a little)
    assert len(body) <= server.bytes_served("shared.pth") < 1.5 * len(body)
    assert done.stderr.count("Downloading:") == 1
    assert (cache / "shared.pth").read_bytes() == body


FAILING_RANK_SCRIPT = """
import json, sys
import asyncfetch

url, model_dir = sys.argv[1:3]
try:
    asyncfetch.load_state_dict_from_url(url, model_dir=model_dir, progress=False)
except asyncfetch.FetchError as exc:
    print(json.dumps({"type": type(exc).__name__, "status": getattr(exc, "status", None),
                      "url": exc.url, "retryable": getattr(exc, "retryable", None)}))
"""


@pytest.mark.slow
@pytest.mark.torch
def test_every_rank_raises_rank_0s_error_type(server: FaultServer, tmp_path: Path) -> None:
    server.add_file("gone.pth", b"x" * 1000)
    url = server.url("gone.pth", status=404, delay=2)  # the others wait on local rank 0
    script = tmp_path / "fail.py"
    script.write_text(FAILING_RANK_SCRIPT)
    children = [
        subprocess.Popen(
            [sys.executable, str(script), url, str(tmp_path / "cache")],
            env=cli_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="4", TORCH_HOME=str(tmp_path)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(4)
    ]
    try:
        outputs = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    results = [json.loads(out) for out, _ in outputs]
    expected = {"type": "HTTPStatusError", "status": 404, "url": url, "retryable": False}
    assert results == [expected] * 4, [err[-2000:] for _, err in outputs]
    assert len([r for r in server.requests if r.method == "HEAD"]) == 1  # rank 0 asked alone


PROCESS_GROUP_SCRIPT = """
import hashlib, os, sys
import torch.distributed as dist
import asyncfetch

url, model_dir, out, store, rank = sys.argv[1:6]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=int(rank), world_size=2)
state = asyncfetch.load_state_dict_from_url(url, model_dir=model_dir, progress=False,
                                            weights_only=True, connections=2)
digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in state.values())).hexdigest()
dist.barrier()
with open(os.path.join(out, f"rank{rank}.txt"), "w") as file:
    file.write(digest)
dist.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.torch
def test_an_initialized_process_group_without_torchrun_downloads_once(
    server: FaultServer, tmp_path: Path
) -> None:
    import torch

    torch.manual_seed(1)
    weights = torch.randn(128, 1024)
    buffer = io.BytesIO()
    torch.save({"w": weights}, buffer)
    body = buffer.getvalue()
    server.add_file("pg.pth", body)
    url = server.url("pg.pth", rate=400_000)
    script = tmp_path / "pg.py"
    script.write_text(PROCESS_GROUP_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    env = cli_env(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(name, None)  # only the process group knows the ranks
    args = [str(script), url, str(tmp_path / "cache"), str(out), str(tmp_path / "store")]

    children = [
        subprocess.Popen([sys.executable, *args, str(rank)], env=env, stderr=subprocess.PIPE)
        for rank in (0, 1)
    ]
    try:
        errors = [child.communicate(timeout=90)[1].decode() for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    assert [c.returncode for c in children] == [0, 0], errors
    expected = hashlib.sha256(weights.numpy().tobytes()).hexdigest()
    assert {(out / f"rank{r}.txt").read_text() for r in (0, 1)} == {expected}
    assert len(body) <= server.bytes_served("pg.pth") < 1.5 * len(body)  # one download
    assert sum(e.count("Downloading:") for e in errors) == 1
    assert "Downloading:" in errors[0]  # by rank 0
