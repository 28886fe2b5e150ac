"""Profile the import hot path of the real service with py-spy (not part of run_all).

    .venv/bin/pip install py-spy      # a tool for this script, not a project dependency
    python bench/profile.py [--rows 1000000] [--postgres URL] [--svg docs/profile.svg]

Starts the service (embedded worker), attaches ``py-spy record --subprocesses`` to the
worker's main process (so its prefork pool children and each import's CSV reader
child, ``python app/kinds/imports/parser.py``, are sampled too) and imports the generated file
three times: once without py-spy, reading each process's scheduler statistics from /proc
(time on a CPU, waiting for a CPU, asleep: what py-spy's "busy" cannot tell apart on a
loaded machine), once recording collapsed stacks (``--raw``, summarised below), once
a flame graph (``--svg``). Idle threads are left out (no ``--idle``), so a process's samples
over the import's duration x the rate is the share of a core it kept busy.

The summary prints, per process, its busy share, and where its samples go: for the
worker's pool child by the frames that name the database writes and the wait for the
reader; for the reader child by its line in app/kinds/imports/parser.py (CSV parsing, JSON encoding,
pickling to the pipe).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common as c

RATE = 100  # samples per second

# Where a pool child's sample goes: the first (label, frame) whose frame is in its stack.
POOL = [
    ("INSERT of the batch's rows (executemany / COPY)", ("do_executemany", "_copy_rows")),
    ("COMMIT", ("do_commit",)),
    ("BEGIN (IMMEDIATE on SQLite) and pool checkout", ("Engine.begin",)),
    ("checkpoint UPDATE ... RETURNING: SQLAlchemy Core build + execute", ("Store.commit",)),
    ("pickle.load of the reader's batch (busy part: unpickling)", ("read_batches_in_child",)),
    ("batch log line", ("logging/",)),
]


def find_pyspy() -> str:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    return exe


@contextlib.contextmanager
def recording(pid: int, out: Path, fmt: str):
    cmd = [find_pyspy(), "record", "--subprocesses", "--pid", str(pid), "--rate", str(RATE)]
    cmd += ["--format", fmt, "--output", str(out), "--nonblocking"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        _, err = proc.communicate(timeout=120)
        if proc.returncode not in (0, -signal.SIGINT) and not out.exists():
            raise RuntimeError(f"py-spy failed ({proc.returncode}): {err.decode()[-500:]}")


def summarise(raw: Path, seconds: float, source: Path) -> str:
    """Busy share per process, and where the pool child's and the reader's time goes."""
    roles: collections.Counter = collections.Counter()
    pool: collections.Counter = collections.Counter()
    reader: collections.Counter = collections.Counter()
    main: collections.Counter = collections.Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        n, frames = int(n), stack.split(";")
        if "_serve (" in stack:
            roles["CSV reader child (app/kinds/imports/parser.py)"] += n
            leaf = next(
                (f for f in reversed(frames) if "(app/kinds/imports/parser.py:" in f), frames[-1]
            )
            reader[leaf] += n
        elif "run_task" in stack:
            roles["worker pool child (the run: database writes)"] += n
            label = next((lb for lb, fs in POOL if any(f in stack for f in fs)), "other")
            pool[label] += n
        else:
            roles["worker main process (Celery loop, control thread)"] += n
            if "Store.checkpoint" in stack:
                main["control thread: PRAGMA wal_checkpoint(PASSIVE)"] += n
            elif "control_loop" in stack:
                main["control thread: other"] += n
            else:
                main["Celery consumer loop and pool threads"] += n

    def source_line(frame: str) -> str:
        m = re.search(r"\(app/kinds/imports/parser.py:(\d+)\)", frame)
        if not m:
            return frame
        try:
            text = (
                (source / "app" / "kinds" / "imports" / "parser.py")
                .read_text()
                .splitlines()[int(m.group(1)) - 1]
            )
        except (OSError, IndexError):
            return frame
        return f"{frame}: {text.strip()[:70]}"

    out = [f"import {seconds:.1f} s (worker started->finished), {RATE} samples/s, busy only:"]
    for role, n in roles.most_common():
        out.append(f"  {n / (seconds * RATE):4.0%} of a core  {role}")
        detail = pool if "pool" in role else reader if "reader" in role else main
        for what, k in detail.most_common(8):
            label = source_line(what) if detail is reader else what
            out.append(f"        {k / n:6.1%}  {label}")
    return "\n".join(out)


def import_once(svc: c.Service, path: Path, root: int, out: Path, fmt: str, timeout: float):
    """Import the file under py-spy (upload to COMPLETED), then roll it back unrecorded."""
    with recording(root, out, fmt):
        task, _ = svc.upload(path)
        done = svc.wait_status(task["id"], "COMPLETED", timeout=timeout, interval=0.2)
    svc.action("terminate", task["id"])
    svc.wait_status(task["id"], "REVOKED", timeout=timeout)
    return done


class Backends:
    """Pids of the PostgreSQL server processes serving one database (re-read every
    0.5 s), so the database server's CPU is counted too; empty on SQLite."""

    def __init__(self, url: str | None):
        self.url, self.pids, self.at = url, [], 0.0

    def __call__(self) -> list[int]:
        if self.url and time.monotonic() - self.at > 0.5:
            import psycopg

            self.at = time.monotonic()
            with psycopg.connect(c.libpq_url(self.url), autocommit=True) as conn:
                self.pids = [
                    pid
                    for (pid,) in conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid()"
                    )
                ]
        return self.pids


def cpu_pass(svc: c.Service, path: Path, timeout: float, url: str | None = None) -> str:
    """Import once without py-spy, reading each worker process's scheduler statistics
    (summed over its threads, every 20 ms, so the reader child's last values before it
    exits are kept): time on a CPU, time runnable but waiting for a CPU (other work on
    the machine), and the rest of its life asleep (waiting on the pipe, the disk, a
    lock; for the main process, idle threads count here too)."""
    backends = Backends(url)
    with c.CpuSampler(lambda: svc.worker_pids() + backends()) as cpu:
        task, _ = svc.upload(path)
        done = svc.wait_status(task["id"], "COMPLETED", timeout=timeout, interval=0.2)
    svc.action("terminate", task["id"])
    svc.wait_status(task["id"], "REVOKED", timeout=timeout)
    wall = c.server_seconds(done, "started_at", "finished_at")
    roots = set(svc.worker_roots())
    rows = []
    for pid, (r, first, last, on_cpu, wait) in cpu.by_pid.items():
        if on_cpu < 0.05:
            continue  # an idle pool child
        if r == "reader":
            name, alive = "CSV reader child", last - first
        elif pid in backends.pids:
            name, alive = f"PostgreSQL backend {pid}", last - first
        elif pid in roots:
            name, alive = "worker main process (all threads)", wall
        else:
            name, alive = "worker pool child (the run)", wall
        rows.append((on_cpu, name, wait, max(0.0, alive - on_cpu - wait)))
    out = [
        f"scheduler time over the import ({wall:.1f} s worker started->finished, no "
        "profiler): on a CPU / runnable, waiting for a CPU / asleep (pipe, disk, lock)"
    ]
    for on_cpu, name, wait, sleep in sorted(rows, reverse=True):
        out.append(f"  {on_cpu:5.2f} s / {wait:5.2f} s / {sleep:5.2f} s  {name}")
    total = sum(r[0] for r in rows)
    out.append(f"  {total:.2f} CPU seconds = {total / wall:.2f} of {os.cpu_count()} cores")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    c.add_common_arguments(p)
    p.add_argument("--svg", default=str(c.ROOT / "docs" / "profile.svg"), help="flame graph")
    p.add_argument("--raw", default=str(c.OUT_DIR / "profile.txt"), help="collapsed stacks")
    args = p.parse_args(argv)
    c.prepare(args)
    path = c.generated_csv(args.rows, args.seed)
    raw, svg = Path(args.raw), Path(args.svg)
    raw.parent.mkdir(parents=True, exist_ok=True)
    ctx = c.scratch_postgres(args.postgres) if args.postgres else contextlib.nullcontext()
    with ctx as url, c.Service(database_url=url, env=c.service_env(args)) as svc:
        (root,) = svc.worker_roots()
        cpu = cpu_pass(svc, path, args.timeout, url)
        done = import_once(svc, path, root, raw, "raw", args.timeout)
        seconds = c.server_seconds(done, "started_at", "finished_at")
        import_once(svc, path, root, svg, "flamegraph", args.timeout)
    print(f"load average {c.loadavg()}")
    print(cpu)
    print(summarise(raw, seconds, c.SOURCE or c.ROOT))
    print(f"flame graph: {svg}; collapsed stacks: {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
