"""A pause (or terminate) is obeyed while the run waits, not when the wait ends.

Each test holds a real worker in one of the waits a run has, for longer than the
test will wait for the outcome: the CSV reader child that has not delivered its
first batch (its upload swapped for a FIFO nobody writes: it blocks in open()),
and the throttle's sleep (a rate of one row per 1,000 s). Without the watch in
the runner, neither pause would land before the wait ends.
"""

import os
import shutil

import pytest
from sqlalchemy import text

from tests.helpers import assert_exact, task, upload, wait_rows, wait_status, write_rows


def upload_path(engine, tid) -> str:
    with engine.connect() as conn:
        return conn.execute(text("SELECT upload_path FROM tasks WHERE id=:t"), {"t": tid}).scalar()


def reader_children(worker) -> list[int]:
    """Pids of the CSV reader children under the worker's process group."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            if os.getpgid(int(pid)) == worker.popen.pid and b"parser.py" in cmd:
                pids.append(int(pid))
        except OSError:
            continue
    return pids


def test_pause_lands_while_the_reader_has_not_started(
    client, engine, stack, start_worker, tmp_path
):
    source = write_rows(tmp_path / "a.csv", 5_000)
    queued = upload(client, source).get_json()  # no worker yet: QUEUED
    tid = queued["id"]
    stored = upload_path(engine, tid)
    os.unlink(stored)
    os.mkfifo(stored)  # the reader blocks opening it until the test says otherwise
    worker = start_worker(concurrency=1)
    wait_status(client, tid, "PROCESSING")
    assert client.post(f"/pause/{tid}").get_json()["status"] == "PAUSING"
    paused = wait_status(client, tid, "PAUSED", timeout=30)
    assert paused["last_row"] == 0 and paused["bytes_done"] == queued["bytes_done"]
    assert not reader_children(worker)  # the stuck reader was stopped, not left behind
    os.unlink(stored)
    shutil.copyfile(source, stored)
    assert client.post(f"/resume/{tid}").status_code == 202
    wait_status(client, tid, "COMPLETED")
    assert_exact(engine, tid, 5_000)


@pytest.mark.parametrize("action, final", [("pause", "PAUSED"), ("terminate", "REVOKED")])
def test_action_lands_while_the_throttle_sleeps(
    client, engine, stack, start_worker, tmp_path, action, final
):
    # One row per 1,000 s: batches of one row, then a sleep of 1,000 s.
    start_worker(concurrency=1, IMPORT_MAX_ROWS_PER_S=0.001)
    tid = upload(client, write_rows(tmp_path / "a.csv", 100)).get_json()["id"]
    wait_rows(client, tid, 1)
    assert client.post(f"/{action}/{tid}").status_code == 202
    done = wait_status(client, tid, final, timeout=30)
    assert done["last_row"] == 1
    assert_exact(engine, tid, 1 if action == "pause" else 0)
    # The only worker slot is free again: the sleep was left, not slept out.
    other = upload(client, write_rows(tmp_path / "b.csv", 0)).get_json()["id"]  # never sleeps
    wait_status(client, other, "COMPLETED", timeout=30)
    assert task(client, tid)["status"] == final
