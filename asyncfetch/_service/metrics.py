"""``asyncfetch serve``'s ``GET /metrics``: Prometheus text format (``prometheus-client``, the
``serve`` extra), one registry per service.

Series::

    asyncfetch_jobs{state}                       jobs in the store by state (at each scrape)
    asyncfetch_queue_depth                       jobs waiting for a download slot
    asyncfetch_downloads_running                 jobs holding a slot
    asyncfetch_received_bytes_total              bytes downloaded
    asyncfetch_source_bytes_total{source}        bytes of finished jobs by source (scheme://host:port:
                                                 an origin, so the label set stays small and no
                                                 path or credential is shown)
    asyncfetch_retries_total                     requests that failed and were tried again
    asyncfetch_jobs_ended_total{state}           jobs that ended done, failed or cancelled
    asyncfetch_http_requests_in_flight           requests to the service being answered (its
                                                 active connections' work)

This module is the one that imports ``prometheus_client``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .._models import ProgressEvent

#: the Content-Type of ``GET /metrics``
CONTENT_TYPE = CONTENT_TYPE_LATEST


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (no userinfo, path or query)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return f"{parts.scheme}://{host}:{port}"


class _Snapshot(Collector):
    """Gauges read at each scrape from ``read`` (state → count, and the slot counts)."""

    def __init__(self, read: Callable[[], tuple[Mapping[str, int], int, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The jobs by state, the queue depth and the running downloads."""
        counts, queued, running = self._read()
        jobs = GaugeMetricFamily("asyncfetch_jobs", "Jobs in the store by state", labels=["state"])
        for state, count in counts.items():
            jobs.add_metric([state], count)
        yield jobs
        yield GaugeMetricFamily("asyncfetch_queue_depth", "Jobs waiting for a slot", value=queued)
        yield GaugeMetricFamily(
            "asyncfetch_downloads_running", "Jobs holding a download slot", value=running
        )


class Metrics:
    """The service's metrics; ``snapshot`` gives the jobs by state and the slot counts."""

    def __init__(self, snapshot: Callable[[], tuple[Mapping[str, int], int, int]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Snapshot(snapshot))
        self._received = Counter("asyncfetch_received_bytes", "Bytes downloaded",
                                 registry=self.registry)  # fmt: skip
        self._sources = Counter("asyncfetch_source_bytes", "Bytes of finished jobs by source",
                                ["source"], registry=self.registry)  # fmt: skip
        self._retries = Counter("asyncfetch_retries", "Requests tried again",
                                registry=self.registry)  # fmt: skip
        self._ended = Counter("asyncfetch_jobs_ended", "Jobs that ended, by how", ["state"],
                              registry=self.registry)  # fmt: skip
        self.in_flight = Gauge(
            "asyncfetch_http_requests_in_flight",
            "Requests to the service being answered",
            registry=self.registry,
        )

    def observe(self, event: ProgressEvent) -> None:
        """Count a download's progress event."""
        if event.kind == "bytes" and event.delta > 0:
            self._received.inc(event.delta)
        elif event.kind == "retry":
            self._retries.inc()

    def ended(self, state: str, bytes_by_source: Mapping[str, int]) -> None:
        """Count a job that ended, and the bytes each source gave it."""
        self._ended.labels(state).inc()
        for url, count in bytes_by_source.items():
            self._sources.labels(origin(url)).inc(count)

    def render(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)
