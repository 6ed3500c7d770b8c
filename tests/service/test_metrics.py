"""``GET /metrics`` of a running ``asyncfetch serve`` (in-process, a FaultServer upstream)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from asyncfetch._service.guard import Guard
from tests.faultserver import FaultServer
from tests.service.test_app import running
from tests.service.test_jobs import ended, submit

TOKEN = "m" * 32
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as (name, sorted labels) → value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_jobs_bytes_sources_retries_and_queue(
    tmp_path: Path, server: FaultServer, payload: bytes
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", reset_after=100_000, times=1)  # one retry
    async with running(tmp_path / "cache", guard=Guard(token=TOKEN)) as svc:
        status, job = await submit(svc, {"url": url}, headers=BEARER)
        assert status == 202, job
        svc.client.headers.update(BEARER)
        assert (await ended(svc, job["id"]))["state"] == "done"
        status, body = await svc.get("/metrics")
        assert status == 200
        async with svc.client.get(f"{svc.url}/metrics") as answer:
            assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")

    found = samples(body.decode())
    origin = "http://" + server.base_url.split("://")[1]
    assert found[("asyncfetch_jobs", (("state", "done"),))] == 1
    assert found[("asyncfetch_jobs", (("state", "queued"),))] == 0
    assert found[("asyncfetch_queue_depth", ())] == 0
    assert found[("asyncfetch_downloads_running", ())] == 0
    assert found[("asyncfetch_received_bytes_total", ())] == len(payload)
    assert found[("asyncfetch_source_bytes_total", (("source", origin),))] == len(payload)
    assert found[("asyncfetch_retries_total", ())] >= 1
    assert found[("asyncfetch_jobs_ended_total", (("state", "done"),))] == 1
    assert found[("asyncfetch_http_requests_in_flight", ())] == 1  # this very request


async def test_metrics_need_the_token_unless_public(tmp_path: Path) -> None:
    async with running(tmp_path / "cache", guard=Guard(token=TOKEN)) as svc:
        assert (await svc.get("/metrics"))[0] == 401
    guard = Guard(token=TOKEN, public_metrics=True)
    async with running(tmp_path / "cache", guard=guard) as svc:
        assert (await svc.get("/metrics"))[0] == 200
        assert (await svc.get("/v1/jobs"))[0] == 401  # only the metrics are public


async def test_without_prometheus_client_metrics_are_a_501_saying_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import raises ImportError
    monkeypatch.delitem(sys.modules, "asyncfetch._service.metrics", raising=False)
    async with running(tmp_path / "cache") as svc:
        status, raw = await svc.get("/metrics")
    body = json.loads(raw)
    assert status == 501
    assert body["type"] == "NotImplemented"
    assert "pip install prometheus-client" in body["error"]
    assert "asyncfetch[" not in body["error"]  # not on PyPI: that would install a stranger's
