"""Dispatch latency: upload answered to PROCESSING, on the embedded broker and on Redis.

    python bench/dispatch.py [--dispatches 10] [--redis redis://127.0.0.1:6379/12]

Each sample uploads a small file (1,000 rows) to an idle service, waits for COMPLETED and
takes the task's ``started_at - created_at`` (server side: the task row created, the
message sent, a worker's pool process claiming it). Samples are spaced by a random
0.05-0.25 s so they do not lock onto a polling period. Baseline, in the same run: the
bare broker round trip with kombu on the same transport and settings (a message put
on a scratch queue to a consumer already waiting in another thread), which is all a
Celery dispatch cannot avoid: Redis BRPOP, or the filesystem transport's 0.1 s polling.
The embedded broker always runs; Redis when ``--redis`` (or BENCH_REDIS_URL) is given,
with separate ``python worker.py`` processes.
"""

from __future__ import annotations

import queue
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common as c
from bench.common import Row

NAME = "dispatch"
SMALL_ROWS = 1000
POLLING_INTERVAL = 0.1  # the embedded broker's (app/__init__.py celery_settings)


def add_arguments(p) -> None:
    g = p.add_argument_group("dispatch")
    g.add_argument(
        "--dispatches", type=int, default=20, help="small uploads per broker (default 20)"
    )


def _gap() -> None:
    time.sleep(random.uniform(0.05, 0.25))


def service_samples(svc: c.Service, path: Path, n: int) -> list[float]:
    out = []
    for _ in range(n):
        _gap()
        task, _ = svc.upload(path)
        done = svc.wait_status(task["id"], "COMPLETED", timeout=120, interval=0.05)
        out.append(c.server_seconds(done, "created_at", "started_at") * 1000)
    return out


def kombu_samples(url: str, n: int, transport_options: dict | None = None) -> list[float]:
    """ms from put to get of ``n`` messages through kombu, consumer already waiting."""
    from kombu import Connection

    name = f"csvbench-{uuid.uuid4().hex[:8]}"
    got: queue.Queue = queue.Queue()
    ready, stop = threading.Event(), threading.Event()
    opts = transport_options or {}

    def consume() -> None:
        with Connection(url, transport_options=opts) as conn:
            q = conn.SimpleQueue(name)
            ready.set()
            while not stop.is_set():
                try:
                    m = q.get(block=True, timeout=0.5)
                except q.Empty:
                    continue
                got.put((time.time(), m.payload["t"]))
                m.ack()
            q.close()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    ready.wait(30)
    out = []
    try:
        with Connection(url, transport_options=opts) as conn:
            q = conn.SimpleQueue(name)
            for _ in range(n + 1):
                _gap()
                q.put({"t": time.time()})
                recv, sent = got.get(timeout=30)
                out.append((recv - sent) * 1000)
            q.queue.delete()
            q.close()
    finally:
        stop.set()
        thread.join(5)
    return out[1:]  # the first one pays for connecting


def filesystem_transport(folder: Path) -> tuple[str, dict]:
    for sub in ("queue", "control", "processed"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return "filesystem://", {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "control_folder": str(folder / "control"),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
        "polling_interval": POLLING_INTERVAL,
    }


def _row(label: str, samples: list[float], base: list[float], what: str) -> Row:
    p50, b50 = c.percentile(samples, 50), c.percentile(base, 50)
    note = (
        f"{len(samples)} uploads, p95 {c.percentile(samples, 95):.1f} ms; baseline: {what}, "
        f"p50 of {len(base)}; lower is better"
    )
    return Row(
        f"dispatch {label}: created_at->started_at p50", p50, b50, c.ratio(p50, b50), "", "ms", note
    )


def run(args) -> list[Row]:
    path = c.generated_csv(SMALL_ROWS, args.seed)
    n = args.dispatches
    env = c.service_env(args)
    rows = []
    with tempfile.TemporaryDirectory(prefix="csvbench-kombu-") as d:
        url, options = filesystem_transport(Path(d))
        base = kombu_samples(url, n, options)
    with c.Service(env=env, keep=args.keep) as svc:
        samples = service_samples(svc, path, n)
    rows.append(
        _row("embedded broker", samples, base, "kombu filesystem:// round trip, 0.1 s polling")
    )
    if args.redis:
        base = kombu_samples(args.redis, n)
        with c.Service(redis_url=args.redis, workers=args.workers, env=env, keep=args.keep) as svc:
            samples = service_samples(svc, path, n)
        rows.append(_row("Redis", samples, base, "kombu Redis round trip"))
    else:
        rows.append(Row("dispatch Redis: not measured", None, None, None, "", "ms", "no --redis"))
    return rows


def main(argv=None) -> int:
    return c.bench_main(__doc__, run, add_arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
