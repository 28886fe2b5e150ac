"""Web and workers that share no disk: each with its own DATA_DIR, joined only by
PostgreSQL, Redis and object storage (moto's S3 server), as on separate hosts.

Processes talk over loopback. Network namespaces (one per process, veth pairs)
would add nothing the separate DATA_DIRs do not already prove: the database and
the broker listen on this machine's loopback, which a namespace cannot reach
without a forwarding layer of the test's own making.
"""

import csv
import io
import os
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.helpers import Proc, free_port, wait_for, write_rows
from tests.s3 import stored

pytestmark = pytest.mark.s3  # `pytest -m s3`: the object-storage tests
N = 60_000


def holder_of_the_reader(workers: list[Proc]) -> Proc:
    """The worker whose process group runs an import's CSV reader child."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            session = os.getsid(int(pid))
        except (OSError, ProcessLookupError):
            continue
        if b"imports/parser.py" in cmdline:
            for w in workers:
                if session == w.popen.pid:
                    return w
    return None


@pytest.mark.parametrize("stack", ["s3"], indirect=True)
def test_web_and_two_workers_with_no_shared_disk(stack, tmp_path):
    common = {**stack, "HEARTBEAT_TIMEOUT_S": "5", "SWEEP_INTERVAL_S": "1"}
    dirs = {name: tmp_path / name for name in ("web", "w1", "w2")}
    port = free_port()
    web = Proc.start(
        ["run.py"],
        {**common, "DATA_DIR": str(dirs["web"]), "PORT": str(port), "HOST": "127.0.0.1"},
        tmp_path / "web.log",
    )
    workers = [
        Proc.start(
            ["worker.py"],
            {
                **common,
                "DATA_DIR": str(dirs[name]),
                "WORKER_CONCURRENCY": "1",
                "IMPORT_MAX_ROWS_PER_S": "15000",
            },
            tmp_path / f"{name}.log",
        )
        for name in ("w1", "w2")
    ]
    engine = create_engine(stack["DATABASE_URL"])
    base = f"http://127.0.0.1:{port}"
    try:
        for w in workers:
            wait_for(lambda w=w: w.log_contains(" ready."), 90, f"worker ready ({w.log})")

        def healthy():
            try:
                return requests.get(f"{base}/healthz", timeout=5).json().get("workers", 0) >= 2
            except (requests.RequestException, ValueError):
                return False

        wait_for(healthy, 90, f"web at {base} with two workers ({web.log})")
        run_the_whole_lifecycle(base, engine, workers, dirs, tmp_path)
    finally:
        for p in (web, *workers):
            p.kill_group()
        engine.dispose()


def sql(engine, query: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(query), params).one()


def get(base, tid) -> dict:
    return requests.get(f"{base}/tasks/{tid}", timeout=10).json()


def wait(base, tid, status) -> dict:
    def check():
        t = get(base, tid)
        assert t["status"] not in {"FAILED", "REVOKED"} - {status}, t
        return t if t["status"] == status else None

    return wait_for(check, 180, f"task {tid} {status}")


def wait_past(base, tid, rows) -> dict:
    return wait_for(lambda: (t := get(base, tid))["last_row"] >= rows and t, 180, f"row {rows}")


def run_the_whole_lifecycle(base, engine, workers, dirs, tmp_path):
    path = write_rows(tmp_path / "in.csv", N, seed=7)
    with open(path, "rb") as f:
        answer = requests.post(f"{base}/", files={"file": ("in.csv", f, "text/csv")}, timeout=120)
    assert answer.status_code == 202, answer.text
    tid = answer.json()["id"]
    location = sql(engine, "SELECT upload_path FROM tasks WHERE id = :t", t=tid)[0]
    assert location.startswith("s3://") and stored(location)

    wait_past(base, tid, 8_000)
    assert requests.post(f"{base}/pause/{tid}", timeout=10).status_code == 202
    paused = wait(base, tid, "PAUSED")
    count, distinct, top = sql(
        engine,
        "SELECT count(*), count(DISTINCT row_number), max(row_number) FROM csv_entries"
        " WHERE task_id = :t",
        t=tid,
    )
    assert count == distinct == top == paused["last_row"] == paused["rows_imported"]
    assert requests.post(f"{base}/resume/{tid}", timeout=10).status_code == 202
    wait_past(base, tid, paused["last_row"] + 8_000)
    holder = wait_for(lambda: holder_of_the_reader(workers), 30, "the worker reading the import")
    holder.kill_group()  # a lost host: the other worker takes over from the checkpoint
    done = wait(base, tid, "COMPLETED")
    assert done["rows_imported"] == done["last_row"] == N
    assert sql(
        engine,
        "SELECT count(*), count(DISTINCT row_number), min(row_number), max(row_number)"
        " FROM csv_entries WHERE task_id = :t",
        t=tid,
    ) == (N, N, 1, N)
    wait_for(lambda: not stored(location), 30, "the upload removed from the bucket")

    answer = requests.post(f"{base}/exports", json={"task_id": tid}, timeout=10)
    assert answer.status_code == 202, answer.text
    eid = answer.json()["id"]
    exported = wait(base, eid, "COMPLETED")
    assert exported["rows_imported"] == exported["rows_total"] == N
    assert sql(engine, "SELECT rows_imported, status FROM tasks WHERE id = :t", t=eid) == (
        N,
        "COMPLETED",
    )
    got = requests.get(f"{base}/tasks/{eid}/download", timeout=60)
    assert got.status_code == 200 and got.headers["Content-Type"].startswith("text/csv")
    with open(path, newline="", encoding="utf-8") as f:
        expected = list(csv.reader(f))
    assert list(csv.reader(io.StringIO(got.text, newline=""))) == expected

    for dir_ in dirs.values():  # no host kept an upload or an export on its disk
        for sub in ("uploads", "exports"):
            assert not os.listdir(dir_ / sub), (dir_, sub)

    export_location = location.rsplit("/uploads/", 1)[0] + f"/exports/{eid}.csv"
    assert stored(export_location)
    for t in (eid, tid):
        assert requests.post(f"{base}/terminate/{t}", timeout=10).status_code == 202
        wait(base, t, "REVOKED")
    assert not stored(export_location)
    assert requests.get(f"{base}/tasks/{eid}/download", timeout=10).status_code == 404
    assert sql(engine, "SELECT count(*) FROM csv_entries WHERE task_id = :t", t=tid) == (0,)
    assert sql(engine, "SELECT status FROM tasks WHERE id = :t", t=tid) == ("REVOKED",)
