"""What operators scrape: ``GET /metrics`` in the Prometheus text format.

Counters and histograms are this process's (each broker or worker process is
scraped on its own, as Prometheus expects); the queue figures are read from the
shared database at scrape time, so any process shows the whole queue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from broker.store.jobs import QueueStats, queue_stats

__all__ = ["CONTENT_TYPE", "BrokerMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _Queue(Collector):
    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.clock()
        stats: QueueStats = queue_stats(self.engine, now=now)
        for name, doc, value in (
            ("broker_transfers_pending", "transfers not yet final", stats.pending),
            ("broker_transfers_due", "pending transfers due and not held by a worker", stats.due),
            ("broker_transfers_in_flight", "pending transfers under a live lease", stats.in_flight),
            ("broker_transfers_lapsed", "pending transfers whose lease ran out", stats.lapsed),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        age = (now - stats.oldest_pending).total_seconds() if stats.oldest_pending else 0.0
        yield GaugeMetricFamily(
            "broker_oldest_pending_seconds", "age of the oldest pending transfer", value=age
        )


class BrokerMetrics:
    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.deliveries = Counter(
            "broker_deliveries",
            "transfers this process ended, by connector and outcome",
            ["connector", "outcome"],
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "broker_delivery_run_seconds",
            "one delivery run (all its attempts) of a transfer",
            ["connector"],
            buckets=_LATENCY,
            registry=r,
        )
        self.refreshes = Counter(
            "broker_token_refreshes", "token refreshes at the provider", ["outcome"], registry=r
        )
        self.record_seconds = Histogram(
            "broker_record_seconds",
            "a transaction that writes a transfer and its audit entry (accept or outcome)",
            ["kind"],
            buckets=_LATENCY,
            registry=r,
        )
        self.audit_batch = Histogram(
            "broker_audit_batch_entries",
            "audit entries per group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.audit_commit_seconds = Histogram(
            "broker_audit_commit_seconds",
            "one group commit of the audit writer (entries, tree, head)",
            buckets=_LATENCY,
            registry=r,
        )
        r.register(_Queue(engine, clock))

    def observe_batch(self, entries: int, seconds: float) -> None:
        self.audit_batch.observe(entries)
        self.audit_commit_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
