"""Run every benchmark and print one table (what ``make bench`` calls).

    python bench/run_all.py [--rows N] [--repeat N] [--postgres URL] [--redis URL]
                            [--only import,...] [--markdown] [--json OUT.json]

Each bench is a module of this package exposing ``run(args) -> list[Row]`` (and
optionally ``add_arguments(parser)`` for its own options); add its name to BENCHES.
Every figure is a ratio against a baseline measured in the same run; nothing asserts a
time, so the exit status only says whether the benches ran.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sqlite3
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common as c

# Module names under bench/ ("import" is a keyword, hence importlib), in running order.
BENCHES = ["import", "latency", "dispatch", "memory", "concurrency", "export", "s3", "stop"]


def load(name: str):
    """The bench module, or None (logged) when it is missing or does not import."""
    try:
        return importlib.import_module(f"bench.{name}")
    except Exception as e:  # noqa: BLE001  a bench someone is still writing must not stop the rest
        c.log(f"bench {name} not loaded: {e.__class__.__name__}: {e}")
        return None


def memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def source_commit() -> str:
    src = c.SOURCE or c.ROOT
    if src.name.startswith("src-"):
        return src.name[4:]
    try:
        rev = c.subprocess.check_output(
            ["git", "-C", str(src), "rev-parse", "--short=12", "HEAD"], text=True
        ).strip()
        dirty = c.subprocess.run(
            ["git", "-C", str(src), "diff", "--quiet", "HEAD", "--", "app", "run.py", "worker.py"]
        ).returncode
        return rev + ("+dirty" if dirty else "")
    except (OSError, c.subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    mem = memory_gb()
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"{mem:.0f} GB RAM, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}"
        if mem
        else f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores"
    )


# Issue 17's table: (measure, the row of the full table it reads, target, whether a
# lower ratio is better, the ratio's bound). Rows a run did not make print "not run".
TARGETS = [
    ("SQLite import vs sqlite3 .import", "sqlite: service, server created->finished", 1.0),
    (
        "PostgreSQL import vs psql \\copy (no index)",
        "postgres: service, server created->finished",
        0.9,
    ),
    ("SQLite export vs sqlite3 -csv", "sqlite, all rows: service, server created->finished", 0.7),
    (
        "PostgreSQL export vs psql \\copy TO",
        "postgres, all rows: service, server created->finished",
        0.7,
    ),
    ("SQLite pause from the client, p95 (ms)", "sqlite: pause from the client p95", -50.0),
    ("PostgreSQL pause from the client, p95 (ms)", "postgres: pause from the client p95", -50.0),
    (
        "SQLite pause mid-run from the client, p95 (ms)",
        "sqlite: pause mid-run from the client p95",
        -50.0,
    ),
    (
        "PostgreSQL pause mid-run from the client, p95 (ms)",
        "postgres: pause mid-run from the client p95",
        -50.0,
    ),
    ("SQLite terminate vs raw DELETE", "sqlite: terminate ", -1.0),
    ("PostgreSQL terminate vs raw DELETE", "postgres: terminate ", -1.0),
]


def target_table(rows: list[c.Row]) -> list[c.Row]:
    """Issue 17's measures, each with its target and whether this run met it.

    A positive bound is a ratio to reach (>=); a negative one a bound not to pass
    (the pause in ms, the terminate's ratio to a DELETE).
    """
    out = []
    for measure, prefix, bound in TARGETS:
        row = next((r for r in rows if r.name.startswith(prefix)), None)
        timed = measure.endswith("(ms)")  # a time against its bound, not a ratio
        if row is None or (row.value if timed else row.ratio) is None:
            out.append(c.Row(measure, None, None, None, "", "", "not run"))
            continue
        if bound > 0:
            got, target, met = row.ratio, f">= {bound:.2f}", row.ratio >= bound
        elif timed:
            got, target, met = row.value, f"< {-bound:.0f} ms", row.value < -bound
        else:
            got, target, met = row.ratio, f"<= {-bound:.2f}", row.ratio <= -bound
        out.append(
            c.Row(
                measure,
                got,
                None,
                None,
                target,
                "",
                ("met" if met else "NOT met") + f": {row.name}",
            )
        )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    c.add_common_arguments(p)
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHES)}")
    p.add_argument("--json", metavar="OUT", help="also write the rows as JSON to this file")
    modules = [load(n) for n in BENCHES]
    for m in modules:
        if hasattr(m, "add_arguments"):
            m.add_arguments(p)
    args = p.parse_args(argv)
    c.prepare(args)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or BENCHES
    unknown = set(chosen) - set(BENCHES)
    if unknown:
        p.error(f"unknown bench: {', '.join(sorted(unknown))}")

    load_before = c.loadavg()
    if os.getloadavg()[0] > 0.5:
        c.log(f"load average {load_before}: other work on this machine skews the figures")
    rows: list[c.Row] = []
    failed: list[str] = []
    loads: dict[str, str] = {}
    t0 = time.perf_counter()
    for name, m in zip(BENCHES, modules, strict=True):
        if name not in chosen:
            continue
        if m is None:
            rows.append(c.Row(f"{name}: not loaded", None, None, None, "", "", "see the log"))
            failed.append(name)
            continue
        loads[name] = c.loadavg()
        c.log(f"running bench {name} (load average {loads[name]})")
        t1 = time.perf_counter()
        try:
            rows += m.run(args)
            c.log(f"bench {name} done in {time.perf_counter() - t1:.0f} s")
        except Exception as e:  # noqa: BLE001  one broken bench must not hide the others' figures
            c.log(f"bench {name} failed: {e.__class__.__name__}: {e}")
            rows.append(
                c.Row(
                    f"{name}: FAILED",
                    None,
                    None,
                    None,
                    "",
                    "",
                    f"{e.__class__.__name__}: {str(e)[:120]}",
                )
            )
            failed.append(name)
    print(
        f"# {machine()}; service at {source_commit()}; {args.rows:,} rows; "
        f"medians of {args.repeat} service / {args.baseline_repeat} baseline runs; "
        f"load average (1/5/15 min) before {load_before}, after {c.loadavg()}; "
        f"{time.perf_counter() - t0:.0f} s"
    )
    print(c.format_table(rows, markdown=args.markdown))
    print("\n# Issue 17's targets (ratios against the baselines above, same run)")
    print(c.format_table(target_table(rows), markdown=args.markdown))
    print(
        "\n# load average (1/5/15 min) as each bench started: "
        + "; ".join(f"{k} {v}" for k, v in loads.items())
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "source": source_commit(),
                    "load_before": load_before,
                    "load_after": c.loadavg(),
                    "load_per_bench": loads,
                    "rows": [r._asdict() for r in rows],
                },
                indent=2,
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
