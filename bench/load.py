"""Bounded load: concurrent imports under random pause / resume / terminate and listings.

    python bench/load.py [--url http://127.0.0.1:5001] [--token T] [--database-url URL]
                         [--duration 60] [--clients 50] [--imports 10] [--rows 20000-50000]

Without --url it starts `python run.py` on a fresh DATA_DIR (SQLite, embedded worker).
`--imports` imports are kept unfinished at all times (a new upload replaces each one that
ends) while `--clients` threads send random actions and listings for `--duration` s.
Then it resumes what is paused, waits until nothing is queued or running, and checks
every task: COMPLETED has exactly its file's rows (1..n, once each), REVOKED has none,
and a task PAUSED at the end of the run had exactly its checkpoint's rows. Row counts come
from SQL when the database is known (--database-url, or the server it started), else
from paging /csv_entries. It prints requests/s and latency percentiles and exits 1 on
any 5xx, transport error or inconsistent task. Plain threads and requests: no new
dependency.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sample_data.generate import write_csv  # noqa: E402

BUSY = ("QUEUED", "PROCESSING", "PAUSING", "TERMINATING")
# What a client does, with weights: listings and reads, and the three actions.
MOVES = {
    "list": 25,
    "get": 15,
    "paused": 5,
    "entries": 10,
    "errors": 5,
    "pause": 15,
    "resume": 20,
    "terminate": 1,
}


class Load:
    """Shared state of a run: the tasks made, the requests' latencies and statuses."""

    def __init__(self, url: str, token: str | None, files: list[tuple[Path, int]]):
        self.url, self.files = url.rstrip("/"), files
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.lock = threading.Lock()
        self.expected: dict[int, int] = {}  # task id -> rows of its file
        self.latency: dict[str, list[float]] = {}
        self.statuses: Counter = Counter()
        self.failures: list[str] = []
        self.stop = threading.Event()

    def request(self, session, kind: str, method: str, path: str, **kw):
        """One timed request; a 5xx or a transport error is recorded as a failure."""
        t0 = time.perf_counter()
        try:
            r = session.request(method, self.url + path, headers=self.headers, timeout=60, **kw)
        except requests.RequestException as exc:
            with self.lock:
                self.failures.append(f"{method} {path}: {exc!r}")
            return None
        took = time.perf_counter() - t0
        with self.lock:
            self.latency.setdefault(kind, []).append(took)
            self.statuses[r.status_code] += 1
            if r.status_code >= 500:
                self.failures.append(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r

    def upload(self, session) -> None:
        path, rows = random.choice(self.files)
        with open(path, "rb") as f:
            r = self.request(session, "upload", "POST", "/", files={"file": (path.name, f)})
        if r is not None and r.status_code == 202:
            with self.lock:
                self.expected[r.json()["id"]] = rows

    def requests_made(self) -> int:
        with self.lock:
            return sum(self.statuses.values()) + len(self.failures)

    def task_ids(self) -> list[int]:
        with self.lock:
            return list(self.expected)

    def client(self, seed: int) -> None:
        rng, session = random.Random(seed), requests.Session()
        moves, weights = list(MOVES), list(MOVES.values())
        while not self.stop.is_set():
            ids = self.task_ids()
            move = rng.choices(moves, weights)[0]
            task_id = rng.choice(ids) if ids else 1
            if move == "list":
                self.request(session, "list", "GET", f"/tasks?limit={rng.choice([10, 100])}")
            elif move == "get":
                self.request(session, "get", "GET", f"/tasks/{task_id}")
            elif move == "paused":
                self.request(session, "list", "GET", "/paused_tasks")
            elif move == "entries":
                self.request(session, "list", "GET", f"/csv_entries?task_id={task_id}&limit=100")
            elif move == "errors":
                self.request(session, "list", "GET", f"/tasks/{task_id}/errors")
            else:
                self.request(session, "action", "POST", f"/{move}/{task_id}")
        session.close()

    def feeder(self, imports: int) -> None:
        """Keep `imports` imports unfinished: upload one whenever one has ended."""
        session = requests.Session()
        while not self.stop.is_set():
            r = self.request(session, "list", "GET", "/tasks?limit=1000")
            if r is not None and r.status_code == 200:
                mine = set(self.task_ids())
                busy = [t for t in r.json()["tasks"] if t["id"] in mine and t["status"] in BUSY]
                for _ in range(imports - len(busy)):
                    self.upload(session)
            self.stop.wait(0.2)
        session.close()


def run_load(
    load: Load, duration: float, clients: int, imports: int, min_requests: int = 0
) -> float:
    """The load phase: `duration` seconds, and longer until `min_requests` requests were
    made (a test bounds the work, not the time: a busy machine is slower, never wrong).
    Returns its length in seconds."""
    session = requests.Session()
    for _ in range(imports):
        load.upload(session)
    threads = [threading.Thread(target=load.feeder, args=(imports,), daemon=True)]
    threads += [
        threading.Thread(target=load.client, args=(i,), daemon=True) for i in range(clients)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(duration)
    while load.requests_made() < min_requests and not load.failures:
        time.sleep(0.1)
    load.stop.set()
    for t in threads:
        t.join(120)
    return time.perf_counter() - started


def all_tasks(load: Load, session) -> dict[int, dict]:
    tasks, path = {}, "/tasks?limit=1000"
    while path:
        body = session.get(load.url + path, headers=load.headers, timeout=60).json()
        tasks.update({t["id"]: t for t in body["tasks"] if t["id"] in load.expected})
        path = body["next"]
    return tasks


def wait_quiet(load: Load, session, statuses, timeout: float) -> dict[int, dict]:
    deadline = time.monotonic() + timeout
    while True:
        tasks = all_tasks(load, session)
        if not any(t["status"] in statuses for t in tasks.values()):
            return tasks
        if time.monotonic() > deadline:
            raise TimeoutError(f"tasks still in {statuses} after {timeout} s")
        time.sleep(0.5)


class RowCounter:
    """(count, distinct row numbers, min, max) of a task's rows: SQL, else the API."""

    def __init__(self, load: Load, database_url: str | None):
        self.load, self.engine = load, None
        if database_url:
            from sqlalchemy import create_engine

            self.engine = create_engine(database_url)

    def __call__(self, session, task_id: int) -> tuple:
        if self.engine is not None:
            from sqlalchemy import text

            sql = (
                "SELECT count(*), count(DISTINCT row_number), min(row_number), "
                "max(row_number) FROM csv_entries WHERE task_id = :t"
            )
            with self.engine.connect() as conn:
                return tuple(conn.execute(text(sql), {"t": task_id}).one())
        numbers, path = [], f"/csv_entries?task_id={task_id}&limit=1000"
        while path:
            body = session.get(self.load.url + path, headers=self.load.headers, timeout=60).json()
            numbers += [e["row_number"] for e in body["entries"]]
            path = body["next"]
        return (
            len(numbers),
            len(set(numbers)),
            min(numbers, default=None),
            max(numbers, default=None),
        )


def exact(n: int) -> tuple:
    return (n, n, 1, n) if n else (0, 0, None, None)


def settle_and_check(load: Load, counter: RowCounter, timeout: float) -> dict:
    """Resume what is paused, wait until nothing is busy, and check every task's rows."""
    session, problems = requests.Session(), []
    tasks = wait_quiet(load, session, ("PAUSING", "TERMINATING"), timeout)
    paused = [t for t in tasks.values() if t["status"] == "PAUSED"]
    for t in paused:
        if counter(session, t["id"]) != exact(t["last_row"]) or t["error_count"]:
            problems.append(f"PAUSED task {t['id']}: rows differ from its checkpoint {t}")
        session.post(f"{load.url}/resume/{t['id']}", headers=load.headers, timeout=60)
    tasks = wait_quiet(load, session, BUSY, timeout)
    for task_id, t in tasks.items():
        rows = counter(session, task_id)
        want = load.expected[task_id]
        if t["status"] == "COMPLETED":
            ok = rows == exact(want) and t["rows_imported"] == want and t["progress"] == 1
        else:
            ok = t["status"] == "REVOKED" and rows == exact(0)
        if not ok:
            problems.append(f"task {task_id} {t['status']}: rows {rows}, file has {want}")
    return {
        "tasks": len(tasks),
        "final": dict(Counter(t["status"] for t in tasks.values())),
        "paused_at_end": len(paused),
        "problems": problems,
    }


def percentiles(xs: list[float]) -> dict:
    xs = sorted(xs)
    if not xs:
        return {}

    def at(p):
        return round(1000 * xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 1)

    return {"n": len(xs), "p50_ms": at(50), "p95_ms": at(95), "p99_ms": at(99), "max_ms": at(100)}


def report(load: Load, seconds: float, check: dict) -> dict:
    every = [x for xs in load.latency.values() for x in xs]
    return {
        "seconds": round(seconds, 1),
        "requests": len(every),
        "requests_per_s": round(len(every) / seconds, 1),
        "latency": percentiles(every),
        "by_kind": {k: percentiles(v) for k, v in sorted(load.latency.items())},
        "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
        "server_errors": sum(v for k, v in load.statuses.items() if k >= 500),
        "failures": load.failures[:20],
        **check,
    }


# 50 clients from one address: the per-client limits would answer most of them 429.
UNLIMITED = {"RATE_LIMIT": "1000000/second", "MAX_ACTIVE_TASKS_PER_CLIENT": "0"}


def start_server(data_dir: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """`python run.py` on a free port (SQLite + embedded worker); waits until healthy."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    full = {**os.environ, **env, "DATA_DIR": str(data_dir), "PORT": str(port)}
    for key in ("DATABASE_URL", "REDIS_URL"):
        full.pop(key, None)
    log = open(data_dir / "server.log", "ab")  # noqa: SIM115  (lives as long as the server)
    proc = subprocess.Popen(
        [sys.executable, "run.py"],
        cwd=ROOT,
        env=full,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: stopped with its worker, whatever happens
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if requests.get(url + "/healthz", timeout=5).json().get("workers", 0) >= 1:
                return proc, url
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"server did not become healthy; see {data_dir / 'server.log'}")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def parse_rows(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running service (default: start one)")
    p.add_argument("--token", default=os.environ.get("API_TOKEN"))
    p.add_argument("--database-url", help="SQLAlchemy URL of its database, for row counts")
    p.add_argument("--duration", type=float, default=60)
    p.add_argument(
        "--min-requests",
        type=int,
        default=0,
        help="go on past --duration until this many requests were made",
    )
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--imports", type=int, default=10)
    p.add_argument("--rows", type=parse_rows, default=(20_000, 50_000), help="LOW-HIGH")
    p.add_argument("--files", type=int, default=6, help="distinct files to upload")
    p.add_argument("--settle-timeout", type=float, default=300)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up as on Ctrl-C

    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        tmp = Path(tmp)
        rng = random.Random(0)
        files = []
        for i in range(args.files):
            rows = rng.randint(*args.rows)
            files.append((Path(write_csv(tmp / f"load{i}.csv", rows, seed=i)), rows))
        server, url, database_url = None, args.url, args.database_url
        if url is None:
            (tmp / "data").mkdir()
            server, url = start_server(tmp / "data", {"WEB_CONCURRENCY": "2", **UNLIMITED})
            database_url = f"sqlite:///{tmp / 'data' / 'app.db'}"
        try:
            load = Load(url, args.token, files)
            seconds = run_load(load, args.duration, args.clients, args.imports, args.min_requests)
            check = settle_and_check(load, RowCounter(load, database_url), args.settle_timeout)
        finally:
            if server is not None:
                stop_server(server)
    result = report(load, seconds, check)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    lat = result["latency"]
    print(
        f"\n{result['requests']} requests in {result['seconds']} s: "
        f"{result['requests_per_s']} req/s; latency p50 {lat['p50_ms']} ms, "
        f"p95 {lat['p95_ms']} ms, p99 {lat['p99_ms']} ms; 5xx: {result['server_errors']}; "
        f"tasks {result['final']}; inconsistent: {len(result['problems'])}"
    )
    bad = result["server_errors"] or load.failures or result["problems"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
