"""Pause latency and resume cost of a running import, from the server's own timestamps.

    python bench/latency.py [--rows 1000000] [--pauses 40] [--resumes 10] [--postgres URL]

Pause latency: an import runs at full speed; the bench pauses it at a random moment,
waits for PAUSED, resumes it, waits until it is PROCESSING again and has committed a
batch, and repeats (``--pauses`` times; a new upload when the file is done). Each
sample is ``paused_at - requested_at``: the pause accepted to the checkpoint that
stopped the run, both on the database's clock. Baseline: the median commit time of one
batch in the same runs (from the worker's ``IMPORT_BATCH_LOG`` lines), the bound the
design gives (a pause is seen at the next checkpoint). Target: p95 under 50 ms.

The same pauses are also timed as the client sees them: the POST to the first GET
showing PAUSED (polled with no sleep), on this host's clock; a pause made while
batches commit back to back waits for SQLite's write lock here. Target: p95 under 50 ms.

Pause from the client: ``--client-pauses`` (12) cycles of resume, then pause as soon as
a GET shows the task PROCESSING (its CSV reader starting); each sample is the POST to
the first GET that shows PAUSED, on this host's clock. Baseline: a GET round trip.
Target: p95 under 50 ms.

Resume cost: task A is paused before it starts (row 0) and task B (the same file) at
90% of it (row ~900,000 of 1,000,000), throttled to a tenth of the file per second;
then the service is restarted on the same data with ``IMPORT_MAX_ROWS_PER_S``
(``--resume-rate``, default 10,000) so that each cycle moves a task little, and,
alternating A and B ``--resumes`` times: resume, wait until ``last_row`` advances, pause
again. Sample: the resume's ``requested_at`` to the end of the task's first batch commit
after it, read from the worker's batch log (``IMPORT_BATCH_LOG`` lines carry this host's
clock with ms resolution, as the database's timestamps do; the commit's own
``updated_at`` is overwritten by the next batches before a poll can be sure to see it).
It covers broker dispatch, the claim, starting the CSV reader at the saved byte offset
and the first batch. Ratio: B's median over A's; target within 2x.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common as c
from bench.common import Row

NAME = "latency"


def add_arguments(p) -> None:
    g = p.add_argument_group("latency")
    g.add_argument("--pauses", type=int, default=40, help="pauses to time (default 40)")
    g.add_argument(
        "--client-pauses",
        type=int,
        default=12,
        help="pause/resume cycles timed from the client (default 12)",
    )
    g.add_argument(
        "--resumes", type=int, default=10, help="resumes to time at each position (default 10)"
    )
    g.add_argument(
        "--resume-rate",
        type=float,
        default=10_000,
        help="IMPORT_MAX_ROWS_PER_S while timing resumes, so that each resume/pause cycle "
        "moves a task little (default 10,000)",
    )
    g.add_argument(
        "--resume-at",
        type=float,
        default=0.9,
        help="where the late task is paused, as a fraction of the file (default 0.9)",
    )


def _ms(a: str | None, b: str | None) -> float | None:
    ta, tb = c.parse_ts(a), c.parse_ts(b)
    return None if ta is None or tb is None else (tb - ta).total_seconds() * 1000


def _upload_running(svc: c.Service, path: Path) -> int:
    task, _ = svc.upload(path)
    tid = task["id"]
    svc.wait_for(tid, lambda t: t["status"] == "PROCESSING" and t["last_row"] > 0, timeout=120)
    return tid


# --------------------------------------------------------------------------- pause


def pause_samples(svc: c.Service, path: Path, n: int) -> tuple[list[float], list, list[str]]:
    """(pause latencies in ms, task ids used, notes; then the same pauses as the client
    saw them: POST to the first GET showing PAUSED, ms)."""
    samples, tids, notes, client = [], [], [], []
    tid = _upload_running(svc, path)
    tids.append(tid)
    skipped = 0
    while len(samples) < n:
        time.sleep(random.uniform(0.0, 0.05))  # a random moment within a batch or two
        t0 = time.perf_counter()
        r = svc.post_action("pause", tid)
        if r.status_code == 409:  # the file is done: go on with a new upload
            tid = _upload_running(svc, path)
            tids.append(tid)
            continue
        if r.status_code not in (200, 202):
            raise RuntimeError(f"pause answered {r.status_code}: {r.text[:300]}")
        if r.json().get("status") != "PAUSING":  # was not running (QUEUED): not a sample
            skipped += 1
        t = svc.wait_for(tid, lambda t: t["status"] in ("PAUSED", "COMPLETED"), interval=0.0)
        seen_ms = (time.perf_counter() - t0) * 1000
        if t["status"] == "PAUSED":
            if r.json().get("status") == "PAUSING":
                client.append(seen_ms)
                ms = _ms(t["requested_at"], svc.paused_at(tid))
                if ms is None:
                    raise RuntimeError(f"task {tid}: no requested_at/paused_at: {t}")
                samples.append(ms)
                c.log(f"pause {len(samples)}/{n}: {ms:.1f} ms at row {t['last_row']:,}")
            svc.action("resume", tid)
            before = t["last_row"]
            try:
                svc.wait_for(
                    tid,
                    lambda t, b=before: (
                        t["status"] == "COMPLETED"
                        or (t["status"] == "PROCESSING" and t["last_row"] > b)
                    ),
                    interval=0.02,
                )
            except RuntimeError:
                pass  # ended: the next pause gets its 409 and a new upload
    if skipped:
        notes.append(f"{skipped} pauses landed on QUEUED, not counted")
    for x in tids:  # leave nothing running for the next bench
        svc.post_action("terminate", x)
    for x in tids:
        svc.wait_status(x, "REVOKED", timeout=600)
    return samples, tids, notes, client


def client_pause_samples(svc: c.Service, path: Path, n: int) -> tuple[list[float], list[float]]:
    """(pause latencies seen by a client, in ms; GET round trips, in ms).

    Each cycle resumes the task, waits until a GET shows PROCESSING (claimed: its
    CSV reader is starting), then times from just before the POST /pause to the
    first GET that shows PAUSED, polling with no sleep: the pause a user makes
    soon after a resume, on this host's clock, HTTP included.
    """
    samples, trips = [], []
    tid = _upload_running(svc, path)
    while len(samples) < n:
        t = svc.task(tid)
        if t["status"] == "COMPLETED":
            svc.post_action("terminate", tid)
            tid = _upload_running(svc, path)
            continue
        if t["status"] == "PAUSED":
            svc.action("resume", tid)
            svc.wait_for(tid, lambda t: t["status"] != "QUEUED", interval=0.002)
        t0 = time.perf_counter()
        r = svc.post_action("pause", tid)
        if r.status_code == 409:  # COMPLETED meanwhile
            continue
        while True:
            t1 = time.perf_counter()
            status = svc.task(tid)["status"]
            trips.append((time.perf_counter() - t1) * 1000)
            if status in ("PAUSED", "COMPLETED"):
                break
        if status == "PAUSED":
            samples.append((time.perf_counter() - t0) * 1000)
            t = svc.task(tid)
            server = _ms(t["requested_at"], svc.paused_at(tid))
            c.log(
                f"client pause {len(samples)}/{n}: {samples[-1]:.1f} ms "
                f"(server: accepted to PAUSED {server:.1f} ms; POST answered "
                f"{r.elapsed.total_seconds() * 1000:.1f} ms, {r.json()['status']})"
            )
    svc.post_action("terminate", tid)
    svc.wait_status(tid, "REVOKED", timeout=600)
    return samples, trips


def _client_pause_rows(label: str, svc: c.Service, path: Path, args) -> list[Row]:
    samples, trips = client_pause_samples(svc, path, args.client_pauses)
    base = c.percentile(trips, 50)
    p50, p95 = c.percentile(samples, 50), c.percentile(samples, 95)
    note = (
        f"{len(samples)} pause/resume cycles, each paused as soon as a GET shows the "
        f"resumed task PROCESSING; p50 {p50:.1f}, max {max(samples):.1f} ms; "
        f"baseline: one GET /tasks/<id> round trip (p50 of {len(trips)})"
    )
    return [
        Row(
            f"{label}: pause from the client p95",
            p95,
            base,
            c.ratio(p95, base),
            "< 50 ms",
            "ms",
            note,
        )
    ]


# --------------------------------------------------------------------------- resume


def _cycle(svc: c.Service, tid) -> tuple[str, int]:
    """Resume a PAUSED task, wait for its first checkpoint, pause it again.

    Returns (the resume's requested_at, the row it resumed at)."""
    before = svc.task(tid)
    if before["status"] != "PAUSED":
        raise RuntimeError(f"task {tid} is {before['status']}, not PAUSED: the file ran out")
    row = before["last_row"]
    requested_at = svc.action("resume", tid)["requested_at"]
    svc.wait_for(tid, lambda t: t["last_row"] > row or t["status"] == "COMPLETED", interval=0.01)
    r = svc.post_action("pause", tid)
    if r.status_code in (200, 202):
        svc.wait_for(tid, lambda t: t["status"] in ("PAUSED", "COMPLETED"), interval=0.02)
    return requested_at, row


def first_checkpoint_ms(log_text: str, tid, requested_at: str) -> float | None:
    """ms from ``requested_at`` to the end of the task's first batch commit after it,
    from the worker's batch log (its timestamps are this host's clock, like the
    database's; the commit's own ``updated_at`` is overwritten by the next batches)."""
    t0 = c.parse_ts(requested_at)
    for when, task, _rows, _ms in c.batch_log(log_text):
        if str(task) == str(tid) and when >= t0:
            return (when - t0).total_seconds() * 1000
    return None


def resume_plan(args) -> tuple[float, int]:
    """(IMPORT_MAX_ROWS_PER_S for the cycles, row to pause the late task at).

    A throttled run starts with a burst (its budget grows while the CSV reader starts,
    about 0.3 s) and then stops 1 to 3 batches after a pause: about 0.55 s worth of the
    rate per resume/pause cycle. The late task needs that much room before the end of
    the file: on a small file it is paused earlier (not before half of it), and, if
    still short, the rate is lowered.
    """
    rows, cycles = args.rows, args.resumes + 1
    rate = args.resume_rate
    target = min(int(rows * args.resume_at), rows - int(cycles * 0.55 * rate))
    if target < rows // 2:
        target = rows // 2
        rate = max(20.0, (rows - target) / (cycles * 0.55))
    return rate, target


def resume_samples(path: Path, args, db_url: str | None, env: dict) -> dict:
    """Position two tasks at full speed (A at row 0, B at ~90%), restart the service
    throttled on the same data, then time alternating resumes of A and B."""
    rate, target = resume_plan(args)
    data_dir = Path(tempfile.mkdtemp(prefix="csvbench-resume-"))
    common = dict(
        database_url=db_url, redis_url=args.redis, workers=args.workers, data_dir=data_dir
    )
    try:
        # Positioning: throttled to a tenth of the file per second, so the late task
        # stops near its target however small the file (about 10 s).
        penv = {**env, "IMPORT_MAX_ROWS_PER_S": str(max(1000.0, args.rows / 10))}
        with c.Service(env=penv, **common) as svc:
            a = svc.upload(path)[0]["id"]
            svc.action("pause", a)  # QUEUED -> PAUSED at row 0 (or its first checkpoint)
            svc.wait_for(a, lambda t: t["status"] == "PAUSED")
            b = _upload_running(svc, path)
            c.log(f"resume bench: running task {b} to row {target:,}")
            svc.wait_for(b, lambda t: t["last_row"] >= target, timeout=args.timeout, interval=0.01)
            svc.action("pause", b)
            svc.wait_for(b, lambda t: t["status"] == "PAUSED")
        out = {"early": [], "late": [], "early_rows": [], "late_rows": []}
        renv = {**env, "IMPORT_MAX_ROWS_PER_S": str(rate)}
        with c.Service(env=renv, **common) as svc:
            done = []
            for i in range(args.resumes):
                pair = (("early", a), ("late", b))
                for which, tid in pair if i % 2 == 0 else pair[::-1]:
                    requested_at, row = _cycle(svc, tid)
                    done.append((which, tid, requested_at, row))
            log_text = svc.read_log()
            for which, tid, requested_at, row in done:
                ms = first_checkpoint_ms(log_text, tid, requested_at)
                if ms is None:
                    raise RuntimeError(f"no batch log line of task {tid} after {requested_at}")
                out[which].append(ms)
                out[which + "_rows"].append(row)
                c.log(f"resume {which} at row {row:,}: {ms:.1f} ms")
            for x in (a, b):
                svc.post_action("terminate", x)
            for x in (a, b):
                svc.wait_status(x, "REVOKED", timeout=600)
        out["rate"] = rate
        return out
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


# --------------------------------------------------------------------------- rows


def _pause_rows(label: str, svc: c.Service, path: Path, args) -> list[Row]:
    samples, tids, notes, client = pause_samples(svc, path, args.pauses)
    log_text = svc.read_log()
    batches = [ms for t in tids for ms in c.batch_ms_list(log_text, t)]
    base = c.percentile(batches, 50)
    p50, p95 = c.percentile(samples, 50), c.percentile(samples, 95)
    note = f"{len(samples)} pauses, max {max(samples):.1f} ms; baseline: batch commit p50 of "
    note += f"{len(batches)} batches (p95 {c.percentile(batches, 95) or 0:.1f} ms)"
    if notes:
        note += "; " + "; ".join(notes)
    return [
        Row(f"{label}: pause latency p50", p50, base, c.ratio(p50, base), "", "ms", note),
        Row(
            f"{label}: pause latency p95",
            p95,
            base,
            c.ratio(p95, base),
            "< 50 ms",
            "ms",
            "requested_at->paused_at; lower is better",
        ),
        Row(
            f"{label}: pause mid-run from the client p95",
            c.percentile(client, 95),
            None,
            None,
            "< 50 ms",
            "ms",
            f"the same {len(client)} pauses, POST to the first GET showing PAUSED (GETs "
            f"with no sleep), this host's clock; p50 {c.percentile(client, 50):.1f}, max "
            f"{max(client):.1f} ms",
        ),
    ]


def _resume_rows(label: str, path: Path, args, db_url, env) -> list[Row]:
    r = resume_samples(path, args, db_url, env)
    early, late = c.median(r["early"]), c.median(r["late"])
    note = (
        f"{args.resumes} resumes each; late at rows {min(r['late_rows']):,}-"
        f"{max(r['late_rows']):,}, early at rows {min(r['early_rows']):,}-"
        f"{max(r['early_rows']):,}; p95 {c.percentile(r['late'], 95):.0f} vs "
        f"{c.percentile(r['early'], 95):.0f} ms; IMPORT_MAX_ROWS_PER_S={r['rate']:,.0f}"
    )
    return [
        Row(
            f"{label}: resume at row {min(r['late_rows']):,} -> first checkpoint",
            late,
            early,
            c.ratio(late, early),
            "<= 2x",
            "ms",
            "baseline: the same at row ~1; " + note,
        )
    ]


def run(args) -> list[Row]:
    path = c.generated_csv(args.rows, args.seed)
    env = {**c.BATCH_LOG_ENV, **c.service_env(args)}
    dbs = [("sqlite", None)]
    if args.postgres:
        dbs.append(("postgres", args.postgres))
    results: list[Row] = []
    for label, url in dbs:
        with c.scratch_postgres(url, keep=args.keep) if url else contextlib.nullcontext() as db_url:
            common = dict(database_url=db_url, redis_url=args.redis, workers=args.workers)
            with c.Service(env=env, keep=args.keep, **common) as svc:
                results += _client_pause_rows(label, svc, path, args)
                results += _pause_rows(label, svc, path, args)
        with c.scratch_postgres(url, keep=args.keep) if url else contextlib.nullcontext() as db_url:
            results += _resume_rows(label, path, args, db_url, env)
    return results


def main(argv=None) -> int:
    return c.bench_main(__doc__, run, add_arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
