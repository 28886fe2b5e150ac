"""Import throughput of the real service against the database's own bulk loader.

    python bench/import.py [--rows 1000000] [--repeat 3] [--postgres URL] [--redis URL]

SQLite: the baseline is the sqlite3 CLI, ``sqlite3 new.db ".mode csv" ".import FILE t"``
(the practical limit: C code, one transaction, no checkpoints). PostgreSQL (with
``--postgres postgresql+psycopg://user@host:port/db``): ``psql -c "\\copy t FROM FILE"``
into a fresh table of 13 text columns. Both run on the same generated file as the
service, in the same run, so only the ratios matter.

The service is started as in production (``python run.py``, a fresh DATA_DIR, and
``python worker.py`` when ``--redis`` is given); each repetition uploads the file, waits
for COMPLETED, then terminates the task (a full rollback) and waits for REVOKED, so
every repetition starts from an empty table and the rollback is measured too.

Measures (rows/s unless stated; ratio = value / baseline, higher is better, except
batch times where lower is better):
- server: the task's ``finished_at - created_at`` (upload accepted to COMPLETED)
- processing: ``finished_at - started_at`` (a worker's time only)
- client: from sending the upload to seeing COMPLETED (includes the upload transfer)
- upload: the POST alone (streaming the file to the server)
- rollback: terminate of the COMPLETED task, ``finished_at - requested_at`` (request
  accepted to REVOKED, server side), against a raw ``DELETE FROM csv_entries WHERE
  task_id = ?`` of the same rows (a copy of them made in the service's own table, with
  its indexes, just before), in seconds: ratio = service / raw, lower is better
- batch p50/p99 (ms), when the service reports them, against the time the baseline
  takes for as many rows
- references (``--no-references`` skips them): the same hot path as a lean in-process
  loop, without HTTP, Celery or the service's bookkeeping, into the service's table
  shape: what a Python importer of this design can reach at most on this machine
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common as c
from bench.common import Row
from sample_data.generate import HEADER

NAME = "import"
SQLITE3 = os.environ.get("SQLITE3", "sqlite3")
PSQL = os.environ.get("PSQL", "psql")
COLUMNS = HEADER  # the generated file's header


def add_arguments(p) -> None:
    g = p.add_argument_group("import")
    g.add_argument(
        "--references",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time a lean in-process Python loader (the service's hot path without the "
        "service) on the same file: the practical ceiling for the service (default: on)",
    )
    g.add_argument(
        "--no-rollback",
        action="store_true",
        help="do not terminate (roll back) after each import",
    )


# --------------------------------------------------------------------------- baselines


def need(program: str, package: str) -> None:
    if not shutil.which(program):
        raise RuntimeError(f"{program} not found (apt-get install {package})")


def sqlite_baseline(path: Path, rows: int, repeat: int) -> tuple[float, float, float]:
    """(median seconds of ``.import``, seconds of a full-scan DELETE of the result,
    median CPU seconds of ``.import``)."""
    need(SQLITE3, "sqlite3")
    times, cpu, delete_s = [], [], None
    with tempfile.TemporaryDirectory(prefix="csvbench-sqlite-") as d:
        for i in range(repeat):
            db = Path(d) / f"base{i}.db"
            times.append(c.timed_run([SQLITE3, str(db), ".mode csv", f".import {path} t"], cpu=cpu))
            if i == 0:
                n = int(
                    subprocess.check_output([SQLITE3, str(db), "SELECT count(*) FROM t"], text=True)
                )
                if n != rows:
                    raise RuntimeError(f"sqlite3 .import loaded {n} rows, expected {rows}")
            c.log(f"sqlite3 .import run {i + 1}/{repeat}: {times[-1]:.2f} s, CPU {cpu[-1]:.2f} s")
        # A WHERE clause defeats SQLite's truncate optimization, like the service's
        # DELETE ... WHERE task_id = ? would.
        delete_s = c.timed_run([SQLITE3, str(db), "DELETE FROM t WHERE seq IS NOT NULL"])
        c.log(f"sqlite3 DELETE: {delete_s:.2f} s")
    return c.median(times), delete_s, c.median(cpu)


def postgres_baseline(url: str, path: Path, rows: int, repeat: int) -> tuple[float, float]:
    """(median seconds of ``psql \\copy`` into a fresh table, seconds of DELETE FROM it)."""
    need(PSQL, "postgresql-client")
    conn = c.libpq_url(url)
    cols = ", ".join(f"{name} text" for name in COLUMNS)
    times, delete_s = [], None
    table = f"csvbench_base_{os.getpid()}"
    try:
        for i in range(repeat):
            subprocess.run(
                [
                    PSQL,
                    conn,
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    "SET client_min_messages = warning",
                    "-c",
                    f"DROP TABLE IF EXISTS {table}",
                    "-c",
                    f"CREATE TABLE {table} ({cols})",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            copy = f"\\copy {table} FROM '{path}' WITH (FORMAT csv, HEADER true)"
            times.append(c.timed_run([PSQL, conn, "-q", "-v", "ON_ERROR_STOP=1", "-c", copy]))
            c.log(f"psql \\copy run {i + 1}/{repeat}: {times[-1]:.2f} s")
        n = int(
            subprocess.check_output(
                [PSQL, conn, "-Atc", f"SELECT count(*) FROM {table}"], text=True
            )
        )
        if n != rows:
            raise RuntimeError(f"psql \\copy loaded {n} rows, expected {rows}")
        delete_s = c.timed_run([PSQL, conn, "-q", "-c", f"DELETE FROM {table}"])
        c.log(f"psql DELETE: {delete_s:.2f} s")
    finally:
        subprocess.run(
            [PSQL, conn, "-q", "-c", f"DROP TABLE IF EXISTS {table}"],
            stdout=subprocess.DEVNULL,
            check=False,
        )
    return c.median(times), delete_s


# --------------------------------------------------------------------------- references


def _batches(path: Path, size: int, copy_task_id: int | None = None):
    """The service's own batches of a file (app.importer.read_batches, in this process):
    (row_number, JSON array text) pairs, or with ``copy_task_id`` binary COPY blocks."""
    from app.kinds.imports.parser import CsvOptions, inspect, read_batches

    options = CsvOptions()
    layout = inspect(str(path), options)
    yield from read_batches(
        str(path),
        options,
        len(layout.header),
        layout.data_offset,
        0,
        layout.data_line,
        size,
        60.0,
        copy_task_id=copy_task_id,
    )


def sqlite_reference(path: Path, rows: int, batch: int = 2000) -> float:
    """Seconds for the service's hot path in one process on SQLite: its CSV reader,
    DBAPI executemany, a checkpoint UPDATE and a commit every ``batch`` rows, WAL mode;
    the service's table shape (key (task_id, row_number), WITHOUT ROWID)."""
    import sqlite3

    with tempfile.TemporaryDirectory(prefix="csvbench-ref-") as d:
        db = sqlite3.connect(Path(d) / "ref.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, last_row INTEGER)")
        db.execute(
            "CREATE TABLE csv_entries (task_id INTEGER, row_number INTEGER, data TEXT, "
            "PRIMARY KEY (task_id, row_number)) WITHOUT ROWID"
        )
        db.execute("INSERT INTO tasks VALUES (1, 0)")
        t0 = c.time.perf_counter()
        for b in _batches(path, batch):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO csv_entries (task_id, row_number, data) VALUES (1, ?, ?)", b.rows
            )
            db.execute("UPDATE tasks SET last_row = ? WHERE id = 1", (b.last_row,))
            db.execute("COMMIT")
        took = c.time.perf_counter() - t0
        n = db.execute("SELECT count(*) FROM csv_entries").fetchone()[0]
        db.close()
    if n != rows:
        raise RuntimeError(f"reference loaded {n} rows, expected {rows}")
    c.log(f"python sqlite reference: {took:.2f} s")
    return took


def postgres_reference(url: str, path: Path, rows: int, batch: int = 2000) -> float:
    """Seconds for the service's hot path in one process on PostgreSQL: its CSV reader
    making binary COPY blocks, COPY, a checkpoint UPDATE and an asynchronous commit
    every ``batch`` rows, into the service's table shape (key (task_id, row_number))."""
    import psycopg

    suffix = f"{os.getpid()}"
    tasks, entries = f"csvbench_ref_tasks_{suffix}", f"csvbench_ref_entries_{suffix}"
    with psycopg.connect(c.libpq_url(url)) as conn:
        try:
            conn.execute(f"CREATE TABLE {tasks} (id int PRIMARY KEY, last_row bigint)")
            conn.execute(
                f"CREATE TABLE {entries} (task_id int, row_number bigint, data text, "
                "PRIMARY KEY (task_id, row_number))"
            )
            conn.execute(f"INSERT INTO {tasks} VALUES (1, 0)")
            conn.commit()
            sql = f"COPY {entries} (task_id, row_number, data) FROM STDIN (FORMAT BINARY)"
            t0 = c.time.perf_counter()
            for b in _batches(path, batch, copy_task_id=1):
                with conn.cursor() as cur:
                    cur.execute(f"UPDATE {tasks} SET last_row = %s WHERE id = 1", (b.last_row,))
                    with cur.copy(sql) as cp:
                        cp.write(b.rows)
                    cur.execute("SET LOCAL synchronous_commit = off")
                conn.commit()
            took = c.time.perf_counter() - t0
            n = conn.execute(f"SELECT count(*) FROM {entries}").fetchone()[0]
        finally:
            conn.rollback()
            conn.execute(f"DROP TABLE IF EXISTS {entries}")
            conn.execute(f"DROP TABLE IF EXISTS {tasks}")
            conn.commit()
    if n != rows:
        raise RuntimeError(f"reference loaded {n} rows, expected {rows}")
    c.log(f"python postgres reference: {took:.2f} s")
    return took


def reference_row(label: str, what: str, rows: int, seconds: float, base_s: float) -> Row:
    value, base = rows / seconds, rows / base_s
    return Row(f"{label}: {what} (reference)", value, base, value / base, "", "rows/s")


# --------------------------------------------------------------------------- raw DELETE


def raw_delete_seconds(svc: c.Service, database_url: str | None, task_id) -> float:
    """Seconds of a raw ``DELETE FROM csv_entries WHERE task_id = ?`` of a copy of a
    task's rows, in the service's own database and table (same indexes, same rows).

    The copy is made under an id no task has (csv_entries has no foreign key), then
    deleted in one transaction; the task's own rows are left for the service's terminate.
    The database is checkpointed before the DELETE and again after it, so that the
    DELETE and the terminate that follows both start from a checkpoint: on PostgreSQL
    the first change to a page after one logs the whole page, and the copy, written
    just before, would otherwise be spared that while the task's own rows are not
    (0.76 s against 1.34 s for the same 1,000,000-row DELETE, measured here).
    """
    tid = int(task_id)
    fake = -tid  # task ids are positive
    copy = (
        "INSERT INTO csv_entries (task_id, row_number, data) "
        "SELECT {p}, row_number, data FROM csv_entries WHERE task_id = {p}"
    )
    delete = "DELETE FROM csv_entries WHERE task_id = {p}"
    if database_url is None:
        import sqlite3

        db = sqlite3.connect(svc.data_dir / "app.db", isolation_level=None, timeout=60)
        try:
            db.execute("PRAGMA synchronous=NORMAL")  # as the service's connections
            db.execute("BEGIN IMMEDIATE")
            db.execute(copy.format(p="?"), (fake, tid))
            db.execute("COMMIT")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            t0 = c.time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            n = db.execute(delete.format(p="?"), (fake,)).rowcount
            db.execute("COMMIT")
            took = c.time.perf_counter() - t0
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
    else:
        import psycopg

        with psycopg.connect(c.libpq_url(database_url)) as conn:
            conn.execute(copy.format(p="%s"), (fake, tid))
            conn.commit()
            conn.execute("CHECKPOINT")  # a superuser's (or pg_checkpoint's) right
            conn.commit()
            t0 = c.time.perf_counter()
            n = conn.execute(delete.format(p="%s"), (fake,)).rowcount
            conn.commit()
            took = c.time.perf_counter() - t0
            conn.execute("CHECKPOINT")
            conn.commit()
    c.log(f"raw DELETE of {n:,} rows in the service's table: {took:.2f} s")
    return took


# --------------------------------------------------------------------------- the service


def _secs(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f} s"


def service_runs(path: Path, rows: int, repeat: int, args, database_url: str | None) -> dict:
    """Import ``path`` ``repeat`` times through the real service; medians of each measure."""
    env = dict(c.BATCH_LOG_ENV)
    env.update(c.service_env(args))
    keys = (
        "server",
        "processing",
        "client",
        "upload",
        "rollback",
        "rollback_client",
        "raw_delete",
        "cpu",
        "cpu_wait",
    )
    m = {k: [] for k in keys}
    notes: list[str] = []
    batch = (None, None, 0)
    with c.Service(
        database_url=database_url,
        redis_url=args.redis,
        workers=args.workers,
        env=env,
        keep=args.keep,
    ) as svc:
        for i in range(repeat):
            t0 = c.time.perf_counter()
            with c.CpuSampler(svc.worker_pids) as cpu:
                task, upload_s = svc.upload(path)
                tid = task["id"]
                done = svc.wait_status(tid, "COMPLETED", timeout=args.timeout)
            client_s = c.time.perf_counter() - t0
            m["cpu"].append(cpu.cpu)
            m["cpu_wait"].append(cpu.wait)
            if done.get("rows_imported") != rows or done.get("error_count"):
                notes.append(
                    f"run {i + 1}: rows_imported={done.get('rows_imported')} "
                    f"error_count={done.get('error_count')}"
                )
            server_s = c.server_seconds(done, "created_at", "finished_at")
            proc_s = c.server_seconds(done, "started_at", "finished_at")
            m["server"].append(server_s)
            m["processing"].append(proc_s)
            m["client"].append(client_s)
            m["upload"].append(upload_s)
            c.log(
                f"service run {i + 1}/{repeat}: server {_secs(server_s)}, "
                f"processing {_secs(proc_s)}, client {client_s:.2f} s, upload {upload_s:.2f} s; "
                f"worker CPU {cpu.cpu:.2f} s, waiting for a CPU {cpu.wait:.2f} s"
            )
            if not any("." in str(done.get(k) or "") for k in ("created_at", "finished_at")):
                notes.append("task timestamps have 1 s resolution")
            if i == 0:
                batch = c.batch_times_ms(done, svc.read_log())
            if not args.no_rollback:
                m["raw_delete"].append(raw_delete_seconds(svc, database_url, tid))
                t1 = c.time.perf_counter()
                svc.action("terminate", tid)
                gone = svc.wait_status(tid, "REVOKED", timeout=args.timeout, interval=0.05)
                m["rollback_client"].append(c.time.perf_counter() - t1)
                m["rollback"].append(c.server_seconds(gone, "requested_at", "finished_at"))
                c.log(
                    f"rollback run {i + 1}/{repeat}: server {_secs(m['rollback'][-1])}, "
                    f"client {m['rollback_client'][-1]:.2f} s"
                )
    out = {k: c.median(v) for k, v in m.items()}
    out["batch"] = batch
    out["notes"] = sorted(set(notes))
    return out


def rows_for(
    label: str,
    rows: int,
    base_s: float,
    base_delete_s: float | None,
    svc: dict,
    baseline_name: str,
    base_cpu: float | None = None,
) -> list[Row]:
    def rps(seconds):
        return None if not seconds else rows / seconds

    base = rps(base_s)
    note = "; ".join(svc["notes"])
    # Issue 17's targets (guidance only, never asserted): SQLite beats `.import`;
    # PostgreSQL reaches 0.9 of `psql \copy` into a plain table with no index.
    server_target, worker_target = (">= 1.00" if label == "sqlite" else ">= 0.90"), ""
    out = [
        Row(f"{label}: {baseline_name} (baseline)", base, base, 1.0, "", "rows/s"),
        Row(
            f"{label}: service, server created->finished",
            rps(svc["server"]),
            base,
            c.ratio(rps(svc["server"]), base),
            server_target,
            "rows/s",
            note,
        ),
        Row(
            f"{label}: service, worker started->finished",
            rps(svc["processing"]),
            base,
            c.ratio(rps(svc["processing"]), base),
            worker_target,
            "rows/s",
        ),
        Row(
            f"{label}: service, client upload->COMPLETED",
            rps(svc["client"]),
            base,
            c.ratio(rps(svc["client"]), base),
            "",
            "rows/s",
        ),
        Row(
            f"{label}: upload POST alone",
            rps(svc["upload"]),
            base,
            c.ratio(rps(svc["upload"]), base),
            "",
            "rows/s",
        ),
    ]
    if svc["cpu"] is not None:
        per_m = 1e6 / rows
        cpu_base = base_cpu * per_m if base_cpu else None
        out.append(
            Row(
                f"{label}: service worker CPU seconds per 1M rows",
                svc["cpu"] * per_m,
                cpu_base,
                c.ratio(svc["cpu"] * per_m, cpu_base),
                "",
                "s",
                f"every worker process (pool child, CSV reader, main), upload to COMPLETED, "
                f"from /proc schedstat; runnable but waiting for a CPU: "
                f"{svc['cpu_wait'] * per_m:.2f} s (other load); lower is better"
                + (
                    f"; baseline: {baseline_name} CPU"
                    if cpu_base
                    else "; database server not counted"
                ),
            )
        )
    if svc["rollback"] is not None:
        cli = ""
        if base_delete_s:
            cli = f"; DELETE of the {baseline_name} table: {base_delete_s:.2f} s"
        out.append(
            Row(
                f"{label}: terminate {rows:,} rows, requested_at->finished_at",
                svc["rollback"],
                svc["raw_delete"],
                c.ratio(svc["rollback"], svc["raw_delete"]),
                "<= 1.0x",
                "s",
                f"baseline: raw DELETE of the same rows in the service's table; lower is "
                f"better; client terminate->REVOKED {_secs(svc['rollback_client'])}{cli}",
            )
        )
    p50, p99, n = svc["batch"]
    if p50 is None:
        out.append(
            Row(
                f"{label}: batch commit p50/p99",
                None,
                None,
                None,
                "",
                "ms",
                "service reports no batch times (TODO hook)",
            )
        )
    else:
        # Baseline: the time the bulk loader needs for one batch's worth of rows.
        size = rows / n if n else 1000
        base_ms = size / base * 1000 if base else None
        out.append(
            Row(
                f"{label}: batch commit p50",
                p50,
                base_ms,
                c.ratio(p50, base_ms),
                "",
                "ms",
                f"{n} batches of ~{size:.0f} rows; lower is better",
            )
        )
        out.append(
            Row(
                f"{label}: batch commit p99",
                p99,
                base_ms,
                c.ratio(p99, base_ms),
                "",
                "ms",
                "lower is better",
            )
        )
    return out


def run(args) -> list[Row]:
    rows = args.rows
    path = c.generated_csv(rows, args.seed)
    results: list[Row] = []

    base_s, base_del, base_cpu = sqlite_baseline(path, rows, args.baseline_repeat)
    if args.no_service:
        svc = {
            "server": None,
            "processing": None,
            "client": None,
            "upload": None,
            "rollback": None,
            "rollback_client": None,
            "raw_delete": None,
            "cpu": None,
            "cpu_wait": None,
            "batch": (None, None, 0),
            "notes": ["service not run"],
        }
    else:
        svc = service_runs(path, rows, args.repeat, args, database_url=None)
    results += rows_for("sqlite", rows, base_s, base_del, svc, "sqlite3 .import", base_cpu)
    if args.references:
        ref_s = sqlite_reference(path, rows)
        what = "the service's reader + executemany, one process"
        results.insert(1, reference_row("sqlite", what, rows, ref_s, base_s))

    if args.postgres:
        with c.scratch_postgres(args.postgres, keep=args.keep) as url:
            pbase_s, pbase_del = postgres_baseline(url, path, rows, args.baseline_repeat)
            if args.no_service:
                psvc = dict(svc)
            else:
                psvc = service_runs(path, rows, args.repeat, args, database_url=url)
            ref = postgres_reference(url, path, rows) if args.references else None
        prows = rows_for("postgres", rows, pbase_s, pbase_del, psvc, "psql \\copy")
        if ref:
            what = "the service's reader + binary COPY, one process"
            prows.insert(1, reference_row("postgres", what, rows, ref, pbase_s))
        results += prows
    return results


def main(argv=None) -> int:
    return c.bench_main(__doc__, run, add_arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
