"""Several imports at once: total throughput, fairness, and no failures or lock errors.

    python bench/concurrency.py [--levels 2,4] [--concurrency-workers 4] [--postgres URL]
                                [--redis redis://127.0.0.1:6379/12]

With ``--redis`` the service runs 4 ``python worker.py`` processes with
``WORKER_CONCURRENCY=1`` (``--concurrency-workers``); without it, run.py's embedded worker
with ``WORKER_CONCURRENCY=4``. For each level N (1, the baseline, then 2 and 4) on a fresh
service: N copies of the same file are uploaded and paused at once, then all resumed
together, so uploads do not stagger the starts. Per task: rows imported after the resume
over ``finished_at - requested_at`` (resume accepted to COMPLETED). Total: all those
rows over the first resume to the last finish. Fairness: the slowest task's rows/s over
the fastest's. Every task must end COMPLETED with every row, and the service log must
hold no "database is locked" (the errors row counts both). SQLite always; PostgreSQL
with ``--postgres``. Rounds interleave the levels; medians over ``--concurrency-repeat``.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common as c
from bench.common import Row

NAME = "concurrency"


def add_arguments(p) -> None:
    g = p.add_argument_group("concurrency")
    g.add_argument("--levels", default="2,4", help="concurrent imports to run (default 2,4)")
    g.add_argument(
        "--concurrency-workers",
        type=int,
        default=4,
        help="worker processes (with --redis: worker.py processes of concurrency 1; "
        "else the embedded worker's concurrency) (default 4)",
    )
    g.add_argument(
        "--concurrency-repeat",
        type=int,
        default=None,
        help="rounds of all levels; medians are printed (default: --repeat)",
    )


def _service(args, db_url: str | None) -> c.Service:
    n = args.concurrency_workers
    env = {**c.BATCH_LOG_ENV, **c.service_env(args)}
    if args.redis:
        env["WORKER_CONCURRENCY"] = "1"
        return c.Service(
            database_url=db_url, redis_url=args.redis, workers=n, env=env, keep=args.keep
        )
    env["WORKER_CONCURRENCY"] = str(n)
    return c.Service(database_url=db_url, env=env, keep=args.keep)


def measure(svc: c.Service, path: Path, n: int, rows: int, timeout: float) -> dict:
    tids = []
    for _ in range(n):
        task, _ = svc.upload(path)
        svc.post_action("pause", task["id"])
        tids.append(task["id"])
    start = {t: svc.wait_for(t, lambda x: x["status"] == "PAUSED")["last_row"] for t in tids}
    for t in tids:
        svc.action("resume", t)
    ends = {t: svc.wait_status(t, c.FINAL, timeout=timeout) for t in tids}
    rates, first, last, total_rows, problems = [], None, None, 0, []
    for t, end in ends.items():
        if end["status"] != "COMPLETED" or end["rows_imported"] != rows:
            problems.append(f"task {t} {end['status']} rows={end['rows_imported']} {end['error']}")
            continue
        begin, finish = c.parse_ts(end["requested_at"]), c.parse_ts(end["finished_at"])
        done = end["last_row"] - start[t]
        rates.append(done / (finish - begin).total_seconds())
        total_rows += done
        first = begin if first is None else min(first, begin)
        last = finish if last is None else max(last, finish)
    log_text = svc.read_log()
    locked = log_text.count("database is locked")
    retries = log_text.count("transient database error")
    total = total_rows / (last - first).total_seconds() if rates else None
    fairness = min(rates) / max(rates) if rates else None
    c.log(
        f"{n} at once: total {total or 0:,.0f} rows/s, per task "
        f"{', '.join(f'{r:,.0f}' for r in rates)}; {len(problems)} failed, "
        f"{locked} 'database is locked', {retries} retries"
    )
    return {
        "total": total,
        "fairness": fairness,
        "failed": len(problems),
        "locked": locked,
        "retries": retries,
        "problems": problems,
    }


def _rows(label: str, results: dict[int, list[dict]], levels: list[int], setup: str) -> list[Row]:
    alone = c.median(r["total"] for r in results[1])
    out = [Row(f"{label}: 1 import alone (baseline)", alone, alone, 1.0, "", "rows/s", setup)]
    for n in levels:
        rs = results[n]
        total = c.median(r["total"] for r in rs)
        fair = c.median(r["fairness"] for r in rs)
        out.append(
            Row(
                f"{label}: {n} imports at once, total",
                total,
                alone,
                c.ratio(total, alone),
                "",
                "rows/s",
                f"median of {len(rs)}",
            )
        )
        out.append(
            Row(
                f"{label}: {n} imports at once, fairness min/max",
                fair,
                1.0,
                fair,
                "",
                "ratio",
                "slowest task's rows/s over the fastest's; "
                + ", ".join(f"{r['fairness'] or 0:.2f}" for r in rs),
            )
        )
    every = [r for rs in results.values() for r in rs]
    failed = sum(r["failed"] for r in every)
    locked = sum(r["locked"] for r in every)
    retries = sum(r["retries"] for r in every)
    problems = "; ".join(p for r in every for p in r["problems"])[:200]
    out.append(
        Row(
            f"{label}: FAILED tasks + 'database is locked' lines",
            failed + locked,
            0,
            None,
            "0",
            "count",
            f"{failed} FAILED, {locked} locked, {retries} transient retries, over "
            f"{sum(len(rs) * n for n, rs in results.items())} imports {problems}".rstrip(),
        )
    )
    return out


def run(args) -> list[Row]:
    rows = args.rows
    path = c.generated_csv(rows, args.seed)
    levels = sorted({int(x) for x in args.levels.split(",") if x.strip()} - {1})
    repeat = args.concurrency_repeat or args.repeat
    n = args.concurrency_workers
    setup = f"{n} worker.py x concurrency 1, Redis" if args.redis else f"embedded worker x {n}"
    dbs = [("sqlite", None)] + ([("postgres", args.postgres)] if args.postgres else [])
    out = []
    for label, url in dbs:
        results: dict[int, list[dict]] = {k: [] for k in [1, *levels]}
        for i in range(repeat):
            order = [1, *levels] if i % 2 == 0 else [*levels[::-1], 1]
            for k in order:
                ctx = c.scratch_postgres(url, keep=args.keep) if url else contextlib.nullcontext()
                with ctx as db_url, _service(args, db_url) as svc:
                    c.log(f"concurrency {label}: round {i + 1}/{repeat}, {k} at once")
                    results[k].append(measure(svc, path, k, rows, args.timeout))
        out += _rows(f"concurrency {label}", results, levels, setup)
    return out


def main(argv=None) -> int:
    return c.bench_main(__doc__, run, add_arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
