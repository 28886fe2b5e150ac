"""Idle stop: seconds from SIGTERM to exit, for `python run.py` and `python worker.py`.

    python bench/stop.py [--repeat 3] [--redis redis://127.0.0.1:6379/12]

Each sample starts the process on a fresh DATA_DIR (SQLite, the embedded broker; a
worker on Redis too when --redis or BENCH_REDIS_URL is given), waits until it is ready
and idle, sends SIGTERM and times the exit with waitpid. The target is 2 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(proc: subprocess.Popen, log: Path, url: str | None) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"exited early: see {log}")
        if url is None and " ready." in log.read_text(errors="replace"):
            return
        if url is not None:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if b'"workers":1' in r.read().replace(b" ", b""):
                        return
            except OSError:
                pass
        time.sleep(0.1)
    raise SystemExit(f"not ready: see {log}")


def sample(what: str, redis_url: str | None) -> float:
    """One idle SIGTERM stop of `what` ("run.py" or "worker.py"), in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        port, log = _port(), Path(tmp) / "out.log"
        env = {
            **os.environ,
            "DATA_DIR": f"{tmp}/data",
            "PORT": str(port),
            "WEB_CONCURRENCY": "2",
            "WORKER_CONCURRENCY": "2",
        }
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        if redis_url:
            env["REDIS_URL"] = redis_url
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, what], cwd=ROOT, env=env, stdout=out, stderr=out
            )
            url = f"http://127.0.0.1:{port}/healthz" if what == "run.py" else None
            try:
                _ready(proc, log, url)
                time.sleep(1.0)  # idle: let start-up chatter (sweeps, checkpoints) settle
                start = time.perf_counter()
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=120)
                return time.perf_counter() - start
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def run(args) -> list:
    """For bench/run_all.py (`make bench`): one row per process and broker."""
    from bench import common as c

    cases = [("run.py", None), ("worker.py", None)]
    if getattr(args, "redis", None):
        cases.append(("worker.py", args.redis))
    rows = []
    for what, redis_url in cases:
        times = [sample(what, redis_url) for _ in range(3)]
        broker = "Redis" if redis_url else "embedded"
        name = f"idle SIGTERM stop: {what} ({broker})"
        note = f"median of 3, max {max(times):.2f} s"
        rows.append(c.Row(name, statistics.median(times), 2.0, None, "< 2 s", "s", note))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL"))
    args = parser.parse_args()
    cases = [("run.py", None), ("worker.py", None)]
    if args.redis:
        cases.append(("worker.py", args.redis))
    print(f"{'process':<12} {'broker':<9} {'median s':>9} {'max s':>7}  (target < 2 s)")
    for what, redis_url in cases:
        times = [sample(what, redis_url) for _ in range(args.repeat)]
        broker = "redis" if redis_url else "embedded"
        print(f"{what:<12} {broker:<9} {statistics.median(times):>9.2f} {max(times):>7.2f}")


if __name__ == "__main__":
    main()
