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
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common as c

# Module names under bench/ ("import" is a keyword, hence importlib). Append "export"
# once exports exist.
BENCHES = ["import"]


def load(name: str):
    return importlib.import_module(f"bench.{name}")


def machine() -> str:
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )


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
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or BENCHES
    unknown = set(chosen) - set(BENCHES)
    if unknown:
        p.error(f"unknown bench: {', '.join(sorted(unknown))}")

    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        c.log(f"load average {load_before:.2f}: other work on this machine skews the figures")
    rows: list[c.Row] = []
    failed: list[str] = []
    t0 = time.perf_counter()
    for name, m in zip(BENCHES, modules, strict=True):
        if name not in chosen:
            continue
        c.log(f"running bench {name}")
        try:
            rows += m.run(args)
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
        f"# {machine()}; {args.rows:,} rows; medians of {args.repeat} service / "
        f"{args.baseline_repeat} baseline runs; load average before {load_before:.2f}; "
        f"{time.perf_counter() - t0:.0f} s"
    )
    print(c.format_table(rows, markdown=args.markdown))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine(), "rows": [r._asdict() for r in rows]}, indent=2)
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
