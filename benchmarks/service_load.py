"""``make bench-service``: ``asyncfetch serve`` under load and faults, on loopback.

500 jobs submitted by 50 concurrent clients (each submits its 10 and follows them with
``GET /v1/jobs/ID``), 100 concurrent Range readers of finished files, and the service killed -9
and started again twice during the run. Checks that no job is lost or duplicated and every
file is right, samples the service's RSS, and prints the p50/p99 latency of ``GET /v1/jobs/ID``
and the throughput.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faultserver import FaultServer, make_payload  # noqa: E402

JOBS = 500
CLIENTS = 50
READERS = 100
SIZE = 1 << 20
KILLS_AT = (4.0, 10.0)  # seconds into the run
JSON = {"Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """``asyncfetch serve`` as a child on a fixed port, started again after each kill."""

    def __init__(self, tmp: Path, port: int) -> None:
        self.tmp, self.port = tmp, port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[str] | None = None
        self.max_rss = 0

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "asyncfetch", "serve", "--port", str(self.port),
             "--allow-private", "--cache-dir", str(self.tmp / "cache"), "--state-dir",
             str(self.tmp / "state"), "--max-downloads", "8", "--max-queue", str(JOBS)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.process.stdout.readline()  # listening

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def rss(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return 0
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        self.max_rss = max(self.max_rss, kb * 1024)
        return kb * 1024


async def call(session: aiohttp.ClientSession, method: str, url: str, body: object = None,
               latencies: list[float] | None = None) -> dict:  # fmt: skip
    """One API call, tried again (bounded) while the service is down."""
    for _ in range(600):
        began = time.perf_counter()
        try:
            data = json.dumps(body) if body is not None else None
            async with session.request(method, url, data=data, headers=JSON) as answer:
                found = await answer.json()
                if answer.status < 500:
                    if latencies is not None:
                        latencies.append(time.perf_counter() - began)
                    return found
        except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError):
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{method} {url}: no answer")


async def client(n: int, service: Service, server: FaultServer, ids: dict[str, str],
                 latencies: list[float]) -> None:  # fmt: skip
    async with aiohttp.ClientSession() as session:
        mine = []
        for k in range(JOBS // CLIENTS):
            name = f"f{n:02d}-{k}.bin"
            job = await call(session, "POST", service.url + "/v1/jobs",
                             {"url": server.url(name, rate=4 << 20)})  # fmt: skip
            ids[name] = job["id"]
            mine.append(job["id"])
        while mine:
            for id_ in list(mine):
                job = await call(session, "GET", f"{service.url}/v1/jobs/{id_}", None, latencies)
                if job["state"] not in ("queued", "running"):
                    mine.remove(id_)
            await asyncio.sleep(0.2)


async def reader(service: Service, done: list[str], payload: bytes, stop: asyncio.Event,
                 counts: dict[str, int]) -> None:  # fmt: skip
    rng = random.Random()
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            if not done:
                await asyncio.sleep(0.1)
                continue
            name = rng.choice(done)
            start = rng.randrange(SIZE - 1)
            end = min(SIZE - 1, start + rng.randrange(1, 256 << 10))
            try:
                ranged = {"Range": f"bytes={start}-{end}"}
                async with session.get(f"{service.url}/v1/files/{name}", headers=ranged) as answer:
                    data = await answer.read()
                    if answer.status == 206:
                        counts["reads"] += 1
                        counts["read_bytes"] += len(data)
                        if data != payload[start : end + 1]:
                            counts["wrong"] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                await asyncio.sleep(0.1)


async def run(tmp: Path) -> dict[str, object]:
    payload = make_payload(SIZE)
    digest = hashlib.sha256(payload).hexdigest()
    with FaultServer() as server:
        for n in range(CLIENTS):
            for k in range(JOBS // CLIENTS):
                server.add_file(f"f{n:02d}-{k}.bin", payload)
        service = Service(tmp, free_port())
        service.start()
        ids: dict[str, str] = {}
        latencies: list[float] = []
        counts = {"reads": 0, "read_bytes": 0, "wrong": 0}
        finished: list[str] = []
        stop = asyncio.Event()
        began = time.monotonic()

        async def watch() -> None:
            kills = list(KILLS_AT)
            while not stop.is_set():
                service.rss()
                if kills and time.monotonic() - began >= kills[0]:
                    kills.pop(0)
                    service.kill()
                    service.start()
                cache = tmp / "cache"
                finished[:] = [p.name for p in cache.glob("f*.bin")] if cache.exists() else []
                await asyncio.sleep(0.25)

        watcher = asyncio.create_task(watch())
        readers = [asyncio.create_task(reader(service, finished, payload, stop, counts))
                   for _ in range(READERS)]  # fmt: skip
        await asyncio.gather(*(client(n, service, server, ids, latencies) for n in range(CLIENTS)))
        took = time.monotonic() - began
        stop.set()
        await asyncio.gather(watcher, *readers)
        async with aiohttp.ClientSession() as session:
            listed = (await call(session, "GET", service.url + "/v1/jobs?limit=1000"))["jobs"]
        service.process.terminate()  # type: ignore[union-attr]
        service.process.wait()  # type: ignore[union-attr]
    states = [j["state"] for j in listed]
    wrong_files = [n for n in ids if hashlib.sha256((tmp / "cache" / n).read_bytes()).hexdigest()
                   != digest]  # fmt: skip
    latencies.sort()
    return {
        "jobs": len(listed), "done": states.count("done"),
        "distinct names": len({j["name"] for j in listed}),
        "not done": [(j["name"], j["state"], j["type"], j["error"]) for j in listed
                     if j["state"] != "done"],
        "wrong files": len(wrong_files), "kills": len(KILLS_AT),
        "seconds": round(took, 1), "jobs/s": round(JOBS / took, 1),
        "MB/s downloaded": round(JOBS * SIZE / took / 1e6, 1),
        "GET /v1/jobs/ID p50 ms": round(statistics.median(latencies) * 1000, 1),
        "GET /v1/jobs/ID p99 ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
        "GET /v1/jobs/ID answers": len(latencies),
        "range reads": counts["reads"], "range MB read": round(counts["read_bytes"] / 1e6, 1),
        "range reads wrong": counts["wrong"], "max RSS MB": round(service.max_rss / 1e6, 1),
    }  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report = asyncio.run(run(Path(tmp)))
    for key, value in report.items():
        print(f"{key:>26}: {value}")
    ok = (report["jobs"] == report["done"] == report["distinct names"] == JOBS
          and report["wrong files"] == 0 and report["range reads wrong"] == 0
          and float(report["max RSS MB"]) < 200)  # type: ignore[arg-type]  # fmt: skip
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    main()
