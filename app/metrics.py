"""Prometheus metrics, with prometheus_client.

The web's GET /metrics serves what the database knows, read at each scrape, so
every web process answers alike and nothing is shared between processes:
`taskctl_tasks{kind,status}`, `taskctl_rows_total{kind}`,
`taskctl_row_errors_total{kind}`, `taskctl_rollback_rows_total` and
`taskctl_workers`. Timings are per process: each worker observes
`taskctl_batch_commit_seconds` and `taskctl_action_seconds{action}` (from the
accepted request to the state the worker reached: PAUSED, REVOKED) and serves
them on WORKER_METRICS_PORT, a second scrape target. A worker's pool processes
write to a folder of that worker's own (prometheus_client's multiprocess mode,
never shared between hosts), which its main process serves.
"""

import logging
import os
import shutil

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from app import config
from app.core import states as S
from app.core.models import Task

log = logging.getLogger(__name__)
T = Task.__table__

BATCH_COMMIT = Histogram(
    "taskctl_batch_commit_seconds",
    "Time to commit one checkpointed batch (rows and checkpoint in one transaction).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ACTION = Histogram(
    "taskctl_action_seconds",
    "From an accepted pause or terminate to the state the worker reached (PAUSED, REVOKED).",
    ["action"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def action_reached(store, task_id: int, action: str) -> None:
    """Observe how long `action` took, from the task row (both times on the DB clock)."""
    try:
        task = store.get(task_id)
        if task is not None and task.requested_at is not None:
            ACTION.labels(action).observe(max(task.updated_at - task.requested_at, 0.0))
    except Exception:  # a metric never stops a run
        log.warning("could not observe %s latency", action, exc_info=True)


class DatabaseCollector:
    """Task counts and row totals from the database, read at each scrape."""

    def __init__(self, engine, kinds, count_workers):
        self.engine, self.kinds, self.count_workers = engine, kinds, count_workers

    def collect(self):
        tasks = GaugeMetricFamily(
            "taskctl_tasks", "Tasks by kind and status.", labels=["kind", "status"]
        )
        rows = CounterMetricFamily(
            "taskctl_rows",
            "Rows imported (exports: written), rolled back ones included.",
            labels=["kind"],
        )
        errors = CounterMetricFamily(
            "taskctl_row_errors", "Rows that could not be imported.", labels=["kind"]
        )
        rollback = CounterMetricFamily("taskctl_rollback_rows", "Rows removed by rollbacks.")
        stmt = select(
            T.c.kind,
            T.c.status,
            func.count(),
            func.coalesce(func.sum(T.c.rows_imported + T.c.rows_rolled_back), 0),
            func.coalesce(func.sum(T.c.error_count), 0),
            func.coalesce(func.sum(T.c.rows_rolled_back), 0),
        ).group_by(T.c.kind, T.c.status)
        with self.engine.connect() as conn:
            found = conn.execute(stmt).all()
        counts = {(k, s): 0 for k in self.kinds for s in S.ALL}  # zeros: alerts need a series
        totals: dict[str, list[int]] = {k: [0, 0] for k in self.kinds}
        rolled_back = 0
        for kind, status, n, imported, failed, removed in found:
            counts[(kind, status)] = n
            totals.setdefault(kind, [0, 0])
            totals[kind][0] += int(imported)
            totals[kind][1] += int(failed)
            rolled_back += int(removed)
        for (kind, status), n in sorted(counts.items()):
            tasks.add_metric([kind, status], n)
        for kind, (imported, failed) in sorted(totals.items()):
            rows.add_metric([kind], imported)
            errors.add_metric([kind], failed)
        rollback.add_metric([], rolled_back)
        workers = GaugeMetricFamily("taskctl_workers", "Live workers answering a ping.")
        workers.add_metric([], self.count_workers())
        return [tasks, rows, errors, rollback, workers]


def web_registry(engine, kinds, count_workers) -> CollectorRegistry:
    """The registry GET /metrics serves: the database's view only."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(engine, kinds, count_workers))
    return registry


def serve_worker(port: int) -> None:
    """Serve this worker's histograms (its pool processes' included) on `port`."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(port, registry=registry)
    log.info("worker metrics on port %d", port)


def remove_worker_folder() -> None:
    """The worker's private multiprocess folder goes with it."""
    folder = config.metrics_folder()
    if folder and os.path.basename(folder).startswith("taskctl-metrics-"):
        shutil.rmtree(folder, ignore_errors=True)
