"""Peak memory of the worker during an import and of the web process during an upload.

    python bench/memory.py [--memory-rows 100000,1000000] [--upload-mb 200]

Read with psutil and /proc: every 20 ms the bench walks the process tree and sums
VmRSS over the processes of interest; the peak is the largest sum. Each process's own
VmHWM (the kernel's peak) is kept too.

- Worker: the worker's whole tree (the Celery main process, its prefork pool children,
  and the CSV reader child each import runs, ``python .../app/kinds/imports/parser.py``), idle
  before the upload (baseline) and while importing a file of 100,000 and of 1,000,000
  rows, each on a fresh service. Target: growth under 30 MB, the same for both sizes
  (memory must not grow with the file).
- Web: run.py (the gunicorn arbiter) and its gunicorn workers, idle (baseline) and
  while a 200 MB file is uploaded. Target: growth under 50 MB.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common as c
from bench.common import Row

NAME = "memory"
MB = 1024  # kB per MB (MiB)
BYTES_PER_ROW = 184  # sample_data/generate.py's rows, on average


def add_arguments(p) -> None:
    g = p.add_argument_group("memory")
    g.add_argument(
        "--memory-rows",
        default="100000,1000000",
        help="file sizes (rows) for the worker's peak memory (default 100000,1000000; "
        "capped at --rows)",
    )
    g.add_argument(
        "--upload-mb", type=int, default=200, help="upload size for the web's peak (default 200)"
    )


def _service(args, env=None) -> c.Service:
    return c.Service(
        redis_url=args.redis,
        workers=args.workers,
        env={**c.service_env(args), **(env or {})},
        keep=args.keep,
    )


def _idle(pids) -> c.RssSampler:
    time.sleep(0.5)  # let start-up settle
    s = c.RssSampler(pids, 0.05)
    for _ in range(20):
        s.sample()
        time.sleep(0.05)
    return s


def worker_peak(path: Path, rows: int, args) -> Row:
    with _service(args) as svc:
        idle = _idle(svc.worker_pids)
        with c.RssSampler(svc.worker_pids) as s:
            task, _ = svc.upload(path)
            done = svc.wait_status(task["id"], "COMPLETED", timeout=args.timeout)
        if done["rows_imported"] != rows:
            raise RuntimeError(f"imported {done['rows_imported']} rows, expected {rows}")
        readers = [kb for r, kb in s.hwm_by_pid.values() if r == "reader"]
    base, peak = idle.peak_kb / MB, s.peak_kb / MB
    grow = {
        r: (kb - idle.peak_by_role.get(r, 0)) / MB
        for r, kb in s.peak_by_role.items()
        if r != "reader"
    }
    note = (
        f"growth {peak - base:+.1f} MB: CSV reader child {max(readers or [0]) / MB:.1f} MB "
        f"(VmHWM), worker main+pool {grow.get('worker', 0):+.1f} MB; {s.samples} samples"
    )
    return Row(
        f"worker tree peak RSS, {rows:,} rows", peak, base, peak / base, "< +30 MB", "MB", note
    )


def web_peak(args) -> Row:
    rows = -(-args.upload_mb * 2**20 // BYTES_PER_ROW // 10_000) * 10_000
    path = c.generated_csv(rows, args.seed)
    size_mb = path.stat().st_size / 2**20
    # The import only starts once the upload is answered, when the sampling stops; the
    # task is terminated right after.
    with _service(args) as svc:
        idle = _idle(svc.web_pids)
        with c.RssSampler(svc.web_pids) as s:
            task, took = svc.upload(path)
        svc.post_action("terminate", task["id"])
        svc.wait_status(task["id"], "REVOKED", timeout=600)
    base, peak = idle.peak_kb / MB, s.peak_kb / MB
    note = (
        f"growth {peak - base:+.1f} MB over {size_mb:.0f} MB streamed in {took:.1f} s; "
        f"{s.samples} samples"
    )
    return Row("web tree peak RSS during upload", peak, base, peak / base, "< +50 MB", "MB", note)


def run(args) -> list[Row]:
    sizes = sorted({min(int(x), args.rows) for x in args.memory_rows.split(",") if x.strip()})
    out = [worker_peak(c.generated_csv(n, args.seed), n, args) for n in sizes]
    out.append(web_peak(args))
    return out


def main(argv=None) -> int:
    return c.bench_main(__doc__, run, add_arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
