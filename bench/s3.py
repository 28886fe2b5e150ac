"""Imports, resume and exports with object storage (STORAGE_URL=s3://...), on moto's S3 server.

    python bench/s3.py [--rows N] [--s3-upload-mb 256]

The baseline of each row is boto3's own whole-object download of the same object
(`aws s3 cp`-style: s3transfer's concurrent ranged GETs), timed in the same run,
as rows per second: what merely fetching the bytes costs here.

- import: POST / with JSON `source` (no upload), the object read by ranged GETs.
- resume: the time to a first batch read from the object at the checkpoint of
  90% of the rows, against the same at row 1 (a resume is one ranged GET from
  the checkpoint's byte offset: flat, wherever it stands).
- export: the rows written to the bucket as a multipart upload, against boto3's
  download of the finished export object.
- upload: the web's peak RSS while a large file streams into the bucket (the
  service keeps one part in memory, never the file).

moto runs here as a local process (`python -m moto.server`, S3 in its memory and
temporary files); real S3 or MinIO answer at other speeds, so the ratios say more
than the absolute figures.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common as c
from bench.common import Row
from bench.memory import _idle

NAME = "s3"
BUCKET = "bench"
MB = 1024  # kB per MiB


def add_arguments(p) -> None:
    g = p.add_argument_group("s3")
    g.add_argument(
        "--s3-upload-mb",
        type=int,
        default=256,
        help="size of the upload streamed into the bucket for the web's RSS (default 256)",
    )


@contextlib.contextmanager
def moto_s3():
    """The AWS variables of a moto S3 server started here on loopback, with a bucket."""
    import boto3
    import requests

    port = c.free_port()
    c.OUT_DIR.mkdir(parents=True, exist_ok=True)
    log = open(c.OUT_DIR / f"moto-{port}.log", "ab")  # noqa: SIM115 (open while it runs)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    env = {
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
    }
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(env["AWS_ENDPOINT_URL_S3"] + "/moto-api/", timeout=2).ok:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("moto's server did not start")
            time.sleep(0.2)
        os.environ.update(env)  # this process reads the bucket too (boto3, the reader)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield env
    finally:
        proc.kill()
        proc.wait()
        log.close()


class _Sink:
    def write(self, data) -> int:
        return len(data)


def download_seconds(key: str, repeat: int) -> float:
    """Median seconds of boto3's whole-object download of `key` (to nowhere)."""
    import boto3

    s3 = boto3.client("s3")
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        s3.download_fileobj(BUCKET, key, _Sink())
        times.append(time.perf_counter() - t0)
    return c.median(times)


def first_batch_seconds(location: str, offset: int, row: int, repeat: int = 7) -> float:
    """Median seconds from opening the object at `offset` to its first batch of rows."""
    from app.kinds.imports.parser import CsvOptions, read_batches

    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        batches = read_batches(location, CsvOptions(), 13, offset, row, row + 2, 2000, 0.02)
        next(batches)
        batches.close()
        times.append(time.perf_counter() - t0)
    return c.median(times)


def offset_of_row(path: Path, row: int) -> int:
    """Byte offset of data row `row` (1-based) of a generated file (no quoted newlines)."""
    with open(path, "rb") as f:
        f.readline()
        for _ in range(row - 1):
            f.readline()
        return f.tell()


def run(args) -> list[Row]:
    import boto3

    rows = args.rows
    path = c.generated_csv(rows, args.seed)
    out: list[Row] = []
    with moto_s3() as env:
        s3 = boto3.client("s3")
        s3.upload_file(str(path), BUCKET, "in/source.csv")
        source = f"s3://{BUCKET}/in/source.csv"
        fetch = rows / download_seconds("in/source.csv", args.baseline_repeat)
        svc_env = {**c.service_env(args), **env, "STORAGE_URL": f"s3://{BUCKET}/svc"}
        with c.Service(redis_url=args.redis, workers=args.workers, env=svc_env) as svc:
            speeds, last = [], None
            for _ in range(args.repeat):
                r = svc.session.post(svc.base + "/", json={"source": source}, timeout=60)
                if r.status_code != 202:
                    raise RuntimeError(f"source import answered {r.status_code}: {r.text[:300]}")
                last = svc.wait_status(r.json()["id"], "COMPLETED", timeout=args.timeout)
                speeds.append(rows / c.server_seconds(last, "started_at", "finished_at"))
            out.append(
                Row(
                    "S3 import (source object)",
                    c.median(speeds),
                    fetch,
                    c.ratio(c.median(speeds), fetch),
                    "",
                    "rows/s",
                    "baseline: boto3 download of the same object",
                )
            )
            late = int(rows * 0.9)
            at_start = first_batch_seconds(source, offset_of_row(path, 1), 0)
            at_late = first_batch_seconds(source, offset_of_row(path, late), late - 1)
            out.append(
                Row(
                    f"S3 resume: first batch at row {late:,} vs row 1",
                    at_late * 1000,
                    at_start * 1000,
                    at_late / at_start,
                    "about 1",
                    "ms",
                    "one HEAD + one ranged GET from the checkpoint's byte offset",
                )
            )
            r = svc.session.post(svc.base + "/exports", json={"task_id": last["id"]}, timeout=60)
            done = svc.wait_status(r.json()["id"], "COMPLETED", timeout=args.timeout)
            speed = rows / c.server_seconds(done, "started_at", "finished_at")
            t0 = time.perf_counter()  # through the web (completes the object if need be)
            with svc.session.get(f"{svc.base}/tasks/{done['id']}/download", stream=True) as r:
                r.raise_for_status()
                got = sum(len(b) for b in r.iter_content(1 << 20))
            web = time.perf_counter() - t0
            key = f"svc/exports/{done['id']}.csv"
            fetch_export = rows / download_seconds(key, args.baseline_repeat)
            out.append(
                Row(
                    "S3 export (multipart)",
                    speed,
                    fetch_export,
                    c.ratio(speed, fetch_export),
                    "",
                    "rows/s",
                    "baseline: boto3 download of the export object; GET /download streamed "
                    f"{got / 2**20:.0f} MB through the web at {rows / web:,.0f} rows/s",
                )
            )
        for row in out:
            c.log(f"{row.name}: {row.value:,.1f} vs {row.baseline:,.1f} {row.unit}")
        try:
            out.append(upload_memory(args, svc_env))
        except Exception as e:  # noqa: BLE001  the rows above still count
            out.append(
                Row("S3 upload: web tree peak RSS", None, None, None, "", "MB", str(e)[:200])
            )
    return out


def big_file(mb: int, seed: int) -> Path:
    """A CSV of about `mb` MiB: a generated file's rows repeated (cached under bench/out/)."""
    base = c.generated_csv(100_000, seed)
    path = c.OUT_DIR / f"s3_upload_{mb}mb.csv"
    if not path.exists():
        data = base.read_bytes()
        header, _, body = data.partition(b"\n")
        with open(path.with_suffix(".tmp"), "wb") as f:
            f.write(header + b"\n")
            while f.tell() < mb * 2**20:
                f.write(body)
        path.with_suffix(".tmp").replace(path)
    return path


def upload_memory(args, env: dict) -> Row:
    path = big_file(args.s3_upload_mb, args.seed)
    size_mb = path.stat().st_size / 2**20
    env = {**env, "MAX_UPLOAD_MB": str(int(size_mb) + 64)}  # room for the whole file
    with c.Service(redis_url=args.redis, workers=args.workers, env=env) as svc:
        idle = _idle(svc.web_pids)
        with c.RssSampler(svc.web_pids) as s:
            task, took = svc.upload(path)
        svc.post_action("terminate", task["id"])
        svc.wait_status(task["id"], "REVOKED", timeout=600)
    base, peak = idle.peak_kb / MB, s.peak_kb / MB
    note = f"growth {peak - base:+.1f} MB over {size_mb:.0f} MB streamed to S3 in {took:.1f} s"
    return Row("S3 upload: web tree peak RSS", peak, base, peak / base, "< +50 MB", "MB", note)


def main(argv=None) -> int:
    return c.bench_main(__doc__, run, add_arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
