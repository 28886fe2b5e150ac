"""Shared helpers for the benchmarks: run the real service, upload, poll, time, report.

Every figure a bench prints is a ratio against a baseline measured in the same run on the
same machine, so the tables compare across machines; nothing here asserts a wall-clock
time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import NamedTuple, Self

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "bench" / "out"  # ignored by git: generated files, service logs

# The tree whose run.py / worker.py the benches start: this checkout unless --source
# (or env BENCH_SOURCE) names another, e.g. a clean `git archive` of a commit while
# others edit the working tree.
SOURCE: Path | None = None

# Final statuses of a task: polling stops on any of them unless told otherwise.
FINAL = frozenset({"COMPLETED", "FAILED", "REVOKED"})


# --------------------------------------------------------------------------- results


class Row(NamedTuple):
    """One line of a results table.

    ``ratio`` is ``value / baseline`` when higher is better (rows/s), and is computed by
    the bench (so a bench may invert it for times); ``target`` is a text such as
    ``">= 0.50"`` or ``""``. ``value``/``baseline`` may be None when not measured.
    """

    name: str
    value: float | None
    baseline: float | None
    ratio: float | None
    target: str = ""
    unit: str = ""
    note: str = ""


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline in (None, 0):
        return None
    return value / baseline


def _fmt_num(x: float | None) -> str:
    if x is None:
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def format_table(rows: list[Row], markdown: bool = False) -> str:
    head = ["measure", "value", "baseline", "ratio", "target", "unit", "note"]
    body = [
        [
            r.name,
            _fmt_num(r.value),
            _fmt_num(r.baseline),
            "n/a" if r.ratio is None else f"{r.ratio:.2f}",
            r.target,
            r.unit,
            r.note,
        ]
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        return "\n".join(lines)
    widths = [
        max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)
    ]
    right = {1, 2, 3}

    def line(cells):
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(head), line(["-" * w for w in widths])]
    out += [line(row) for row in body]
    return "\n".join(out)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def percentile(xs, p: float):
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence, else None."""
    xs = sorted(xs)
    if not xs:
        return None
    k = max(0, min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1))
    return xs[k]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


# --------------------------------------------------------------------------- processes


def children(pid: int) -> list[int]:
    """The direct children of ``pid``; [] if it is gone."""
    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it; [] if it is gone."""
    try:
        return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def status_kb(pid: int, *keys: str) -> dict[str, int]:
    """Fields of /proc/<pid>/status in kB (VmRSS, VmHWM, ...); {} if the process is gone.

    Read directly: psutil has no VmHWM (the kernel's peak RSS of the process).
    """
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in keys:
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return out


def role(cmd: str) -> str:
    """What a service process is, from its command line."""
    if "imports/parser.py" in cmd:
        return "reader"
    if "worker.py" in cmd:
        return "worker"
    if "run.py" in cmd:
        return "web"
    return cmd.split(" ")[0].rsplit("/", 1)[-1] or "?"


class RssSampler:
    """Samples the resident memory of a changing set of processes in a thread.

    ``pids()`` is called at every sample (so children that come and go, such as the CSV
    reader, are seen); the peak is the largest sum of VmRSS over one sample. Each
    process's own VmHWM (its kernel-kept peak) is kept too, per role, for processes
    that outlive the sampling and for peaks between two samples.
    """

    def __init__(self, pids, interval: float = 0.02):
        import threading

        self._pids, self.interval = pids, interval
        self.peak_kb, self.samples = 0, 0
        self.peak_by_role: dict[str, int] = {}
        self.hwm_by_pid: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> int:
        total, by_role = 0, {}
        for pid in self._pids():
            st = status_kb(pid, "VmRSS", "VmHWM")
            if not st:
                continue
            r = self.hwm_by_pid.get(pid, ("",))[0]
            if r != "reader":
                r = role(cmdline(pid)) if cmdline(pid) else r or "?"
            total += st.get("VmRSS", 0)
            by_role[r] = by_role.get(r, 0) + st.get("VmRSS", 0)
            old = self.hwm_by_pid.get(pid, (r, 0))[1]
            self.hwm_by_pid[pid] = (r, max(old, st.get("VmHWM", 0)))
        self.peak_kb = max(self.peak_kb, total)
        for r, kb in by_role.items():
            self.peak_by_role[r] = max(self.peak_by_role.get(r, 0), kb)
        self.samples += 1
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def schedstat(pid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) of a process, summed
    over its threads (/proc/<pid>/task/*/schedstat), or None if it is gone.

    Read directly: psutil has no run-queue wait.
    """
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    cpu = wait = 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                a, b, _ = f.read().split()
        except (OSError, ValueError):
            continue
        cpu, wait = cpu + int(a), wait + int(b)
    return cpu / 1e9, wait / 1e9


class CpuSampler:
    """CPU time of a changing set of processes while a block runs, read from
    /proc/<pid>/task/*/schedstat every ``interval`` (so a child that exits, such as the
    CSV reader, is counted up to its last sample). ``by_pid`` maps a pid to (role, first
    seen monotonic, last seen, seconds on a CPU, seconds waiting for a CPU) since it was
    first seen, or since the block began for processes already alive then."""

    def __init__(self, pids, interval: float = 0.02):
        import threading

        self._pids, self.interval = pids, interval
        self._first: dict[int, tuple[float, float, float]] = {}
        self.by_pid: dict[int, tuple[str, float, float, float, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def sample(self) -> None:
        now = time.monotonic()
        for pid in self._pids():
            st = schedstat(pid)
            if st is None:
                continue
            t0, cpu0, wait0 = self._first.setdefault(pid, (now, *st))
            # A role once seen sticks: a reader that is exiting (a zombie) has no cmdline,
            # and a child seen between fork and exec still shows its parent's.
            r = self.by_pid.get(pid, ("",))[0]
            if r != "reader":
                r = role(cmdline(pid)) if cmdline(pid) else r or "?"
            self.by_pid[pid] = (r, t0, now, st[0] - cpu0, st[1] - wait0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    @property
    def cpu(self) -> float:
        return sum(v[3] for v in self.by_pid.values())

    @property
    def wait(self) -> float:
        return sum(v[4] for v in self.by_pid.values())


def children_cpu_seconds() -> float:
    """user + system CPU seconds of this process's waited-for children so far."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --------------------------------------------------------------------------- data files


def generated_csv(rows: int, seed: int = 0, directory: Path | None = None) -> Path:
    """A generated CSV with ``rows`` data rows, cached under bench/out/ (never committed)."""
    from sample_data.generate import write_csv

    directory = Path(directory or OUT_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"people_{rows}_s{seed}.csv"
    if not path.exists():
        log(f"generating {rows:,} rows -> {path}")
        tmp = path.with_suffix(".tmp")
        write_csv(tmp, rows, seed)
        tmp.replace(path)
    return path


# --------------------------------------------------------------------------- timing


def timed_run(cmd: list[str], cpu: list | None = None, **kw) -> float:
    """Run a command to completion, raising on failure; return its wall time in seconds
    (and append its CPU seconds to ``cpu`` when given)."""
    c0 = children_cpu_seconds()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    took = time.perf_counter() - t0
    if cpu is not None:
        cpu.append(children_cpu_seconds() - c0)
    return took


def parse_ts(value: str | None) -> dt.datetime | None:
    """An ISO 8601 timestamp from the task JSON (``Z`` or an offset; naive means UTC)."""
    if not value:
        return None
    d = dt.datetime.fromisoformat(value)  # 3.11+ reads "Z" too
    return d if d.tzinfo else d.replace(tzinfo=dt.UTC)


def server_seconds(task: dict, start: str = "created_at", end: str = "finished_at") -> float | None:
    a, b = parse_ts(task.get(start)), parse_ts(task.get(end))
    if a is None or b is None:
        return None
    return (b - a).total_seconds()


# --------------------------------------------------------------------------- the service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """The real service as subprocesses: ``python run.py`` (plus ``python worker.py``
    processes when ``REDIS_URL`` is given, since run.py embeds a worker only without it).

    Use as a context manager; the data directory is a fresh temporary one unless given,
    and is removed on exit unless ``keep=True``. Logs go to ``<data_dir>/service.log``
    (copied to bench/out/ on failure).
    """

    def __init__(
        self,
        *,
        database_url: str | None = None,
        redis_url: str | None = None,
        workers: int = 1,
        env: dict[str, str] | None = None,
        data_dir: str | Path | None = None,
        keep: bool = False,
        python: str = sys.executable,
        ready_timeout: float = 120.0,
        source: str | Path | None = None,
    ):
        self.database_url = database_url
        self.redis_url = redis_url
        self.n_workers = workers
        self.extra_env = dict(env or {})
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="csvbench-"))
        self.keep = keep
        self.python = python
        self.ready_timeout = ready_timeout
        self.source = Path(source or SOURCE or ROOT)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.log_path = self.data_dir / "service.log"
        self._log = None
        self.session = requests.Session()

    # -- lifecycle
    def env(self) -> dict[str, str]:
        e = dict(os.environ)
        for k in ("DATABASE_URL", "REDIS_URL"):
            e.pop(k, None)
        e.update(
            DATA_DIR=str(self.data_dir),
            PORT=str(self.port),
            HOST="127.0.0.1",
            PYTHONUNBUFFERED="1",
            # Every bench client is one address: the per-client limits would measure
            # themselves (429s), not the work.
            RATE_LIMIT="1000000/second",
            MAX_ACTIVE_TASKS_PER_CLIENT="0",
        )
        if self.database_url:
            e["DATABASE_URL"] = self.database_url
        if self.redis_url:
            e["REDIS_URL"] = self.redis_url
        e.update(self.extra_env)
        return e

    def _spawn(self, script: str) -> subprocess.Popen:
        p = subprocess.Popen(
            [self.python, script],
            cwd=self.source,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches its children
        )
        self.procs.append(p)
        return p

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 (open while the service runs)
        if self.redis_url:
            purge_redis_queue(self.redis_url)
        self._spawn("run.py")
        if self.redis_url:
            for _ in range(self.n_workers):
                self._spawn("worker.py")
        self.wait_ready()
        return self

    def wait_ready(self) -> dict:
        deadline = time.monotonic() + self.ready_timeout
        last = None
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(
                        f"service process exited with {p.returncode}; log:\n{self.tail_log()}"
                    )
            try:
                r = self.session.get(self.base + "/healthz", timeout=5)
                last = f"{r.status_code} {r.text[:200]}"
                if r.status_code == 200 and (r.json().get("workers") or 0) >= 1:
                    return r.json()
            except (requests.RequestException, ValueError) as e:
                last = repr(e)
            time.sleep(0.25)
        raise TimeoutError(
            f"service not ready after {self.ready_timeout}s (last: {last}); log:\n{self.tail_log()}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        # Children of a process group leader that outlived it (e.g. pool processes).
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        self.procs.clear()
        if self._log:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        if self._own_dir and not self.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            self.save_log("failed-start")
            self.cleanup()
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()
        if exc_type is not None:
            self.save_log("failed")
        self.cleanup()

    def tail_log(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def save_log(self, tag: str) -> Path | None:
        if not self.log_path.exists():
            return None
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        dest = OUT_DIR / f"service-{tag}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        shutil.copyfile(self.log_path, dest)
        log(f"service log saved to {dest}")
        return dest

    # -- processes
    def worker_roots(self) -> list[int]:
        """Pids of the worker main processes: the ``python worker.py`` processes with
        Redis, else the embedded worker that run.py started as its child."""
        if self.redis_url:
            return [p.pid for p in self.procs[1:] if p.poll() is None]
        return [pid for pid in children(self.procs[0].pid) if "worker.py" in cmdline(pid)]

    def worker_pids(self) -> list[int]:
        """Every process of the workers: main, prefork pool children, CSV reader children."""
        return [pid for root in self.worker_roots() for pid in descendants(root)]

    def web_pids(self) -> list[int]:
        """run.py (the gunicorn arbiter) and its gunicorn workers, without the embedded
        worker's tree."""
        workers = set(self.worker_pids())
        return [pid for pid in descendants(self.procs[0].pid) if pid not in workers]

    # -- API
    def upload(
        self,
        path: str | Path,
        fields: dict[str, str] | None = None,
        timeout: float = 3600,
    ) -> tuple[dict, float]:
        """POST / streaming the file from disk; returns (task JSON, seconds the POST took)."""
        body = MultipartFile(path, fields=fields)
        t0 = time.perf_counter()
        r = self.session.post(
            self.base + "/",
            data=body,
            headers={"Content-Type": body.content_type, "Accept": "application/json"},
            timeout=timeout,
        )
        took = time.perf_counter() - t0
        if r.status_code != 202:
            raise RuntimeError(f"upload answered {r.status_code}: {r.text[:500]}")
        return r.json(), took

    def paused_at(self, task_id) -> str | None:
        """``paused_at`` of a PAUSED task: from its own JSON when the service puts it
        there, else from GET /paused_tasks (where it always is)."""
        t = self.task(task_id)
        if t.get("paused_at"):
            return t["paused_at"]
        url = "/paused_tasks?limit=1000"
        while url:
            r = self.session.get(self.base + url, timeout=30)
            r.raise_for_status()
            body = r.json()
            for item in body["tasks"]:
                if str(item["id"]) == str(task_id):
                    return item.get("paused_at")
            url = body.get("next")
        return None

    def task(self, task_id) -> dict:
        r = self.session.get(f"{self.base}/tasks/{task_id}", timeout=30)
        r.raise_for_status()
        return r.json()

    def action(self, verb: str, task_id) -> dict:
        r = self.session.post(f"{self.base}/{verb}/{task_id}", timeout=30)
        if r.status_code not in (200, 202):
            raise RuntimeError(f"{verb} answered {r.status_code}: {r.text[:500]}")
        return r.json()

    def wait_status(
        self, task_id, statuses=FINAL, timeout: float = 3600, interval: float = 0.2
    ) -> dict:
        """Poll GET /tasks/<id> until its status is one of ``statuses`` (a str or a set)."""
        if isinstance(statuses, str):
            statuses = {statuses}
        deadline = time.monotonic() + timeout
        while True:
            t = self.task(task_id)
            if t.get("status") in statuses:
                return t
            if t.get("status") in FINAL:
                raise RuntimeError(
                    f"task {task_id} ended {t.get('status')} (wanted {sorted(statuses)}): "
                    f"{t.get('error')}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} still {t.get('status')} after {timeout}s")
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(
                        f"service process exited with {p.returncode}; log:\n{self.tail_log()}"
                    )
            time.sleep(interval)

    def wait_for(self, task_id, pred, timeout: float = 600, interval: float = 0.02) -> dict:
        """Poll GET /tasks/<id> until ``pred(task)`` holds (or the task ended otherwise)."""
        deadline = time.monotonic() + timeout
        while True:
            t = self.task(task_id)
            if pred(t):
                return t
            if t.get("status") in FINAL:
                raise RuntimeError(f"task {task_id} ended {t.get('status')}: {t.get('error')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id}: condition not met after {timeout}s: {t}")
            time.sleep(interval)

    def post_action(self, verb: str, task_id) -> requests.Response:
        """POST /<verb>/<id>, answering whatever the service answers (no raise)."""
        return self.session.post(f"{self.base}/{verb}/{task_id}", timeout=30)


def purge_redis_queue(url: str, queue: str = "runs") -> None:
    """Drop messages a previous run left in the service's queue (a fresh broker, as the
    DATA_DIR is fresh): a stale "run task 3" would otherwise claim a new task 3."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.delete(queue, "unacked", "unacked_index")
    finally:
        client.close()


class MultipartFile:
    """A multipart/form-data body that streams one file from disk, with a known length.

    ``requests`` sends it with a Content-Length (no chunked encoding) reading it block by
    block, so a 10 GB upload needs no memory on the client either.
    """

    def __init__(
        self,
        path: str | Path,
        field: str = "file",
        fields: dict[str, str] | None = None,
        chunk: int = 1 << 20,
    ):
        self.path = Path(path)
        self.boundary = "csvbench-" + uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        pre = b""
        for k, v in (fields or {}).items():
            pre += (
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            ).encode()
        pre += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{self.path.name}"\r\nContent-Type: text/csv\r\n\r\n'
        ).encode()
        self._pre = pre
        self._post = f"\r\n--{self.boundary}--\r\n".encode()
        self._size = self.path.stat().st_size
        self.len = len(self._pre) + self._size + len(self._post)
        self._chunk = chunk
        self._parts = None

    def __len__(self) -> int:
        return self.len

    def __iter__(self):
        yield self._pre
        with open(self.path, "rb") as f:
            while block := f.read(self._chunk):
                yield block
        yield self._post

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (fewer at a part boundary; b"" at the end), copying only those."""
        if self._parts is None:
            self._parts = iter(self)
            self._block, self._pos = b"", 0
        while self._pos >= len(self._block):
            nxt = next(self._parts, None)
            if nxt is None:
                return b""
            self._block, self._pos = nxt, 0
        if n is None or n < 0:
            n = len(self._block) - self._pos
        out = self._block[self._pos : self._pos + n]
        self._pos += len(out)
        return out


# --------------------------------------------------------------------------- batch timing hook

# TODO(core): the service has no batch-timing output yet. The bench starts it with
# IMPORT_BATCH_LOG=1 and reads either
#   * a task JSON field ``batch_ms`` = {"p50": .., "p99": .., "count": ..}, or
#   * one log line per committed batch containing ``batch`` ... ``rows=<n>`` ... ``ms=<float>``
#     (e.g. ``batch task=3 rows=1000 ms=4.2``), on the service's stdout/stderr.
# Whichever appears first is used; without either, batch rows print "n/a".
BATCH_LOG_ENV = {"IMPORT_BATCH_LOG": "1"}
_BATCH_RE = re.compile(r"\bbatch\b.*?\brows=(\d+)\b.*?\bms=([0-9.]+)")


_BATCH_LINE_RE = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}):[^\]]*\] "
    r"(?:\[task [^\]]*\] )?"  # the task context the logs add (app/logs.py)
    r"batch task=(\S+) rows=(\d+) ms=([0-9.]+)",
    re.M,
)


def batch_log(service_log: str):
    """(time the commit ended, task id, rows, ms) of every batch log line, in order.

    The time is Python logging's ``asctime`` (this host's local time, ms resolution).
    """
    for m in _BATCH_LINE_RE.finditer(service_log):
        when = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").astimezone()
        yield when, m.group(2), int(m.group(3)), float(m.group(4))


def batch_ms_list(service_log: str, task_id=None) -> list[float]:
    """Every batch commit time (ms) in the log, of one task when ``task_id`` is given."""
    out = []
    for m in _BATCH_RE.finditer(service_log):
        if task_id is not None:
            line_start = service_log.rfind("\n", 0, m.start()) + 1
            if f"task={task_id} " not in service_log[line_start : m.end()]:
                continue
        out.append(float(m.group(2)))
    return out


def batch_times_ms(task: dict, service_log: str) -> tuple[float | None, float | None, int]:
    """(p50, p99, number of batches) of batch commit times in ms, or (None, None, 0)."""
    stats = task.get("batch_ms")
    if isinstance(stats, dict) and stats.get("p50") is not None:
        return (
            float(stats["p50"]),
            float(stats.get("p99") or 0) or None,
            int(stats.get("count") or 0),
        )
    times = [float(m.group(2)) for m in _BATCH_RE.finditer(service_log)]
    if not times:
        return None, None, 0
    return percentile(times, 50), percentile(times, 99), len(times)


# --------------------------------------------------------------------------- PostgreSQL


def libpq_url(sqlalchemy_url: str) -> str:
    """postgresql+psycopg://u@h/db -> postgresql://u@h/db (for psql and psycopg)."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", sqlalchemy_url).replace(
        "postgres://", "postgresql://", 1
    )


def with_database(url: str, dbname: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@contextlib.contextmanager
def scratch_postgres(url: str, keep: bool = False):
    """Yield a SQLAlchemy URL of a fresh database on the server of ``url``, dropped after.

    Falls back to ``url`` itself when the role may not create databases.
    """
    import psycopg

    name = f"csvbench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        with psycopg.connect(libpq_url(url), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as e:
        log(f"cannot create a scratch database ({e.__class__.__name__}: {e}); using {url} as is")
        yield url
        return
    try:
        yield with_database(url, name)
    finally:
        if not keep:
            with psycopg.connect(libpq_url(url), autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- command line


def service_env(args) -> dict[str, str]:
    """The --service-env KEY=VALUE pairs as a dict."""
    env = {}
    for item in getattr(args, "service_env", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--service-env wants KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def add_common_arguments(p) -> None:
    """Options every bench understands (run_all passes one namespace to all of them)."""
    p.add_argument(
        "--rows",
        type=int,
        default=1_000_000,
        help="data rows in the generated file (default 1,000,000)",
    )
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="service runs per measure; medians are printed (default 3)",
    )
    p.add_argument(
        "--baseline-repeat",
        type=int,
        default=3,
        help="baseline runs; the median is used (default 3)",
    )
    p.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL"),
        metavar="URL",
        help="also bench PostgreSQL: a SQLAlchemy URL such as "
        "postgresql+psycopg://postgres@127.0.0.1:5432/test; a scratch database is created "
        "on that server and dropped after (env BENCH_POSTGRES_URL)",
    )
    p.add_argument(
        "--redis",
        default=os.environ.get("BENCH_REDIS_URL"),
        metavar="URL",
        help="use this Redis broker and separate `python worker.py` processes "
        "(env BENCH_REDIS_URL); default: the embedded broker and worker of run.py",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker.py processes with --redis (default 1)",
    )
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the service (repeatable), e.g. IMPORT_BATCH_SIZE=5000",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=3600,
        help="seconds to wait for one task (default 3600)",
    )
    p.add_argument("--no-service", action="store_true", help="measure the baselines only")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the service's DATA_DIR and scratch database",
    )
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument(
        "--source",
        default=os.environ.get("BENCH_SOURCE"),
        metavar="DIR|git:REV",
        help="run the service from this tree instead of the checkout, or from a clean "
        "`git archive` of REV extracted under bench/out/ (env BENCH_SOURCE); useful when "
        "others are editing the working tree",
    )


def prepare(args) -> None:
    """Apply the options that set module state (--source); call once after parsing."""
    global SOURCE
    src = getattr(args, "source", None)
    if not src:
        return
    if src.startswith("git:"):
        rev = subprocess.check_output(
            ["git", "-C", str(ROOT), "rev-parse", "--verify", src[4:] + "^{commit}"], text=True
        ).strip()
        dest = OUT_DIR / f"src-{rev[:12]}"
        if not (dest / "run.py").exists():
            dest.mkdir(parents=True, exist_ok=True)
            archive = subprocess.Popen(
                ["git", "-C", str(ROOT), "archive", rev], stdout=subprocess.PIPE
            )
            subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
            if archive.wait() != 0:
                raise SystemExit(f"git archive {rev} failed")
        log(f"service source: {dest} (commit {rev[:12]})")
        SOURCE = dest
    else:
        SOURCE = Path(src).resolve()
        if not (SOURCE / "run.py").exists():
            raise SystemExit(f"--source {src}: no run.py there")


def bench_main(doc: str, run, add_arguments=None, argv=None) -> int:
    """A bench module run alone: its arguments and the common ones, then its table."""
    import argparse

    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_common_arguments(p)
    if add_arguments is not None:
        add_arguments(p)
    args = p.parse_args(argv)
    prepare(args)
    print(format_table(run(args), markdown=args.markdown))
    return 0
