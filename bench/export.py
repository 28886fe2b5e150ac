"""Export throughput of the real service against the database's own CSV writer.

    python bench/export.py [--rows 1000000] [--repeat 3] [--postgres URL] [--redis URL]

SQLite: the baseline is the sqlite3 CLI writing the same rows as CSV,
``sqlite3 -csv -header DB "SELECT * FROM t [WHERE ...]" > out.csv``, from a table of
13 text columns that ``.import`` loaded from the generated file (C code, one query, no
checkpoints). PostgreSQL (``--postgres URL``): ``psql -c "\\copy (SELECT ...) TO FILE
CSV HEADER"``. Both run in the same run on the same file as the service: only the
ratios matter.

The service is started as in production (``python run.py``, plus ``python worker.py``
with ``--redis``); the generated file is imported once (bench/import.py measures that),
then each repetition POSTs /exports of that import, waits for COMPLETED, downloads the
file and checks its row count against the baseline's. Two exports: every row, and a
date window on the ``date`` column (MM/DD/YYYY; 2016-01-01 to 2017-12-31, about a
third of the rows), which the baseline filters in SQL.

Measures (rows written per second; ratio = value / baseline, higher is better):
- server: the export task's ``finished_at - created_at`` (POST accepted to COMPLETED,
  the counting pass of a date-filtered export included)
- worker: ``finished_at - started_at`` (a worker's time only)
- download: GET /tasks/<id>/download of the finished file alone
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common as c
from bench.common import Row
from sample_data.generate import HEADER

NAME = "export"
SQLITE3 = os.environ.get("SQLITE3", "sqlite3")
PSQL = os.environ.get("PSQL", "psql")
WINDOW = ("2016-01-01", "2017-12-31")
# MM/DD/YYYY as YYYY-MM-DD, in SQL both databases understand.
ISO_DATE = "substr(date, 7, 4) || '-' || substr(date, 1, 2) || '-' || substr(date, 4, 2)"
CASES = {
    "all rows": ({}, ""),
    "date window": (
        {"column": "date", "from": WINDOW[0], "to": WINDOW[1]},
        f" WHERE {ISO_DATE} BETWEEN '{WINDOW[0]}' AND '{WINDOW[1]}'",
    ),
}


def need(program: str, package: str) -> None:
    import shutil

    if not shutil.which(program):
        raise RuntimeError(f"{program} not found (apt-get install {package})")


# --------------------------------------------------------------------------- baselines


def sqlite_baseline(path: Path, repeat: int) -> dict[str, tuple[float, int]]:
    """Per case: (median seconds of ``sqlite3 -csv`` writing the rows, rows written)."""
    need(SQLITE3, "sqlite3")
    out: dict[str, tuple[float, int]] = {}
    with tempfile.TemporaryDirectory(prefix="csvbench-export-") as d:
        db = Path(d) / "base.db"
        subprocess.run([SQLITE3, str(db), ".mode csv", f".import {path} t"], check=True)
        for case, (_body, where) in CASES.items():
            sql = f"SELECT * FROM t{where}"
            times = []
            for i in range(repeat):
                dest = Path(d) / "out.csv"
                cmd = [SQLITE3, "-csv", "-header", str(db), f".output {dest}", sql]
                times.append(c.timed_run(cmd))
                c.log(f"sqlite3 -csv ({case}) run {i + 1}/{repeat}: {times[-1]:.2f} s")
            count = subprocess.check_output([SQLITE3, str(db), f"SELECT count(*) FROM t{where}"])
            out[case] = (c.median(times), int(count))
    return out


def postgres_baseline(url: str, path: Path, repeat: int) -> dict[str, tuple[float, int]]:
    """Per case: (median seconds of ``psql \\copy (SELECT ...) TO`` a file, rows written)."""
    need(PSQL, "postgresql-client")
    conn = c.libpq_url(url)
    table = f"csvbench_export_{os.getpid()}"
    cols = ", ".join(f"{name} text" for name in HEADER)
    psql = [PSQL, conn, "-q", "-v", "ON_ERROR_STOP=1"]
    out: dict[str, tuple[float, int]] = {}
    try:
        subprocess.run(
            [*psql, "-c", f"DROP TABLE IF EXISTS {table}", "-c", f"CREATE TABLE {table} ({cols})"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        load = f"\\copy {table} FROM '{path}' WITH (FORMAT csv, HEADER true)"
        subprocess.run([*psql, "-c", load], check=True)
        with tempfile.TemporaryDirectory(prefix="csvbench-export-") as d:
            for case, (_body, where) in CASES.items():
                dest = Path(d) / "out.csv"
                copy = f"\\copy (SELECT * FROM {table}{where}) TO '{dest}' CSV HEADER"
                times = []
                for i in range(repeat):
                    times.append(c.timed_run([*psql, "-c", copy]))
                    c.log(f"psql \\copy TO ({case}) run {i + 1}/{repeat}: {times[-1]:.2f} s")
                count = subprocess.check_output(
                    [PSQL, conn, "-Atc", f"SELECT count(*) FROM {table}{where}"], text=True
                )
                out[case] = (c.median(times), int(count))
    finally:
        subprocess.run(
            [*psql, "-c", f"DROP TABLE IF EXISTS {table}"], stdout=subprocess.DEVNULL, check=False
        )
    return out


# --------------------------------------------------------------------------- the service


def service_runs(path: Path, args, database_url: str | None) -> dict[str, dict]:
    """Import ``path`` once, then export it ``repeat`` times per case; medians."""
    out: dict[str, dict] = {}
    with c.Service(
        database_url=database_url,
        redis_url=args.redis,
        workers=args.workers,
        env=c.service_env(args),
        keep=args.keep,
    ) as svc:
        source, _ = svc.upload(path)
        svc.wait_status(source["id"], "COMPLETED", timeout=args.timeout)
        for case, (body, _where) in CASES.items():
            m = {"server": [], "worker": [], "download": [], "rows": set()}
            for i in range(args.repeat):
                r = svc.session.post(
                    f"{svc.base}/exports", json={"task_id": source["id"], **body}, timeout=60
                )
                if r.status_code != 202:
                    raise RuntimeError(f"POST /exports answered {r.status_code}: {r.text[:300]}")
                done = svc.wait_status(r.json()["id"], "COMPLETED", timeout=args.timeout)
                t0 = time.perf_counter()
                size = download(svc, done["id"])
                m["download"].append(time.perf_counter() - t0)
                m["server"].append(c.server_seconds(done, "created_at", "finished_at"))
                m["worker"].append(c.server_seconds(done, "started_at", "finished_at"))
                m["rows"].add(done["rows_imported"])
                c.log(
                    f"export ({case}) run {i + 1}/{args.repeat}: {done['rows_imported']:,} rows, "
                    f"{size / 1e6:.0f} MB; server {m['server'][-1]:.2f} s, "
                    f"worker {m['worker'][-1]:.2f} s, download {m['download'][-1]:.2f} s"
                )
                svc.action("terminate", done["id"])  # removes the file
            out[case] = {k: (v if k == "rows" else c.median(v)) for k, v in m.items()}
    return out


def download(svc, task_id) -> int:
    """GET the file, streaming it to nowhere; return its size in bytes."""
    size = 0
    with svc.session.get(f"{svc.base}/tasks/{task_id}/download", stream=True, timeout=600) as r:
        r.raise_for_status()
        for block in r.iter_content(1 << 20):
            size += len(block)
    return size


def rows_for(label: str, base: dict, svc: dict | None, baseline_name: str) -> list[Row]:
    out = []
    for case, (base_s, count) in base.items():
        base_rps = count / base_s
        out.append(Row(f"{label}, {case}: {baseline_name} (baseline)", base_rps, base_rps, 1.0))
        if svc is None:
            continue
        s = svc[case]
        note = "" if s["rows"] == {count} else f"rows written {sorted(s['rows'])} != {count}"
        for key, what, target in (
            ("server", "service, server created->finished", ">= 0.70"),
            ("worker", "service, worker started->finished", ""),
            ("download", "download GET alone", ""),
        ):
            rps = count / s[key] if s[key] else None
            out.append(
                Row(
                    f"{label}, {case}: {what}",
                    rps,
                    base_rps,
                    c.ratio(rps, base_rps),
                    target,
                    "rows/s",
                    note,
                )
            )
    return out


def run(args) -> list[Row]:
    path = c.generated_csv(args.rows, args.seed)
    results = []
    base = sqlite_baseline(path, args.baseline_repeat)
    svc = None if args.no_service else service_runs(path, args, database_url=None)
    results += rows_for("sqlite", base, svc, "sqlite3 -csv")
    if args.postgres:
        with c.scratch_postgres(args.postgres, keep=args.keep) as url:
            pbase = postgres_baseline(url, path, args.baseline_repeat)
            psvc = None if args.no_service else service_runs(path, args, database_url=url)
        results += rows_for("postgres", pbase, psvc, "psql \\copy TO")
    return results


def main(argv=None) -> int:
    return c.bench_main(__doc__, run, None, argv)


if __name__ == "__main__":
    sys.exit(main())
