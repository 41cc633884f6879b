"""Prometheus metrics, one registry per application (no process-wide globals).

Counters and histograms are updated where things happen. Values that mirror state are
read at scrape time: live ones (streams, workers) by a collector, stored ones (jobs by
type and state) by one query just before the page is rendered.
"""

from __future__ import annotations

import operator
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sse_jobs.records import Event

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_EVENT_NAME = operator.attrgetter("name")
_JOB_SECONDS = (0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600)
_HTTP_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    """Every metric sse-jobs exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Gauge("sse_jobs_jobs", "Jobs stored, by type and state",
                          ["type", "state"], registry=r)
        self.queue_depth = Gauge("sse_jobs_queue_depth", "Jobs waiting to run", registry=r)
        self.submitted = Counter("sse_jobs_jobs_submitted", "Jobs accepted, by type",
                                 ["type"], registry=r)
        self.job_duration = Histogram("sse_jobs_job_duration_seconds",
                                      "Run time of attempts, by type and how they ended",
                                      ["type", "outcome"], buckets=_JOB_SECONDS, registry=r)
        self.queue_wait = Histogram("sse_jobs_queue_wait_seconds",
                                    "Time from runnable (submitted or retry due) to started",
                                    ["type"], buckets=_JOB_SECONDS, registry=r)
        self.events_stored = Counter("sse_jobs_events_stored", "Events committed to storage",
                                     ["event"], registry=r)
        self.webhooks = Counter("sse_jobs_webhook_deliveries", "Webhook delivery attempts",
                                ["outcome"], registry=r)
        self.open_connections = Gauge("sse_jobs_open_connections",
                                      "HTTP connections open now", registry=r)
        self.connections_refused = Counter(
            "sse_jobs_connections_refused",
            "Connections closed unserved: over --max-connections (limit), or without "
            "request headers within --header-timeout (header_timeout)", ["reason"], registry=r)
        self.requests = Histogram("sse_jobs_http_request_duration_seconds",
                                  "HTTP requests by route, method and status",
                                  ["route", "method", "status"], buckets=_HTTP_SECONDS,
                                  registry=r)

    def count_events(self, events: Sequence[Event]) -> None:
        for name, count in Tally(map(_EVENT_NAME, events)).items():
            self.events_stored.labels(name.value).inc(count)

    def watch(self, live: Callable[[], LiveState]) -> None:
        """Export the values ``live()`` reports at each scrape."""
        self.registry.register(_LiveCollector(live))

    def set_job_counts(self, counts: Sequence[tuple[str, str, int]]) -> None:
        self.jobs.clear()
        for job_type, state, count in counts:
            self.jobs.labels(job_type, state).set(count)
        self.queue_depth.set(sum(count for _type, state, count in counts if state == "queued"))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LiveState:
    """What the running process knows without asking storage."""

    def __init__(self, *, running: int, workers_alive: int, job_streams: int,
                 global_streams: int, dropped: int) -> None:
        self.running = running
        self.workers_alive = workers_alive
        self.job_streams = job_streams
        self.global_streams = global_streams
        self.dropped = dropped


class _LiveCollector(Collector):
    def __init__(self, live: Callable[[], LiveState]) -> None:
        self._live = live

    def collect(self) -> Iterator[Metric]:
        state = self._live()
        yield GaugeMetricFamily("sse_jobs_running_jobs", "Attempts running now",
                                value=state.running)
        yield GaugeMetricFamily("sse_jobs_pool_workers_alive", "Worker processes alive",
                                value=state.workers_alive)
        streams = GaugeMetricFamily("sse_jobs_open_streams", "Open SSE streams",
                                    labels=["scope"])
        streams.add_metric(["job"], state.job_streams)
        streams.add_metric(["global"], state.global_streams)
        yield streams
        yield CounterMetricFamily("sse_jobs_slow_subscribers_dropped",
                                  "Streams dropped for falling behind",
                                  value=state.dropped)
