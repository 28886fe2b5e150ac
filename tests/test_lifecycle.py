"""Pause, resume and terminate with real worker processes on a real broker.

Imports are held open with IMPORT_MAX_ROWS_PER_S (a real user setting), so the
tests act on a running task without sleeping and hoping.
"""

import threading
from contextlib import contextmanager

import pytest
from sqlalchemy import text

from tests.helpers import (
    assert_exact,
    freeze,
    row_stats,
    task,
    thaw,
    upload,
    wait_for,
    wait_rows,
    wait_status,
    write_rows,
)
from tests.s3 import stored

N = 300_000


@pytest.fixture
def big_csv(tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "big300k.csv"
    if not path.exists():
        write_rows(path, N)
    return path


def workers_for(stack, start_worker, **env):
    """One worker on the embedded broker; two sharing the work on Redis."""
    count = 2 if stack.get("REDIS_URL") else 1
    return [start_worker(**env) for _ in range(count)]


def checkpoint_matches_rows(engine, t) -> None:
    """The committed checkpoint and the committed rows always agree."""
    count, distinct, _, top = row_stats(engine, t["id"])
    assert count == distinct == t["rows_imported"]
    assert (top or 0) <= t["last_row"]


@pytest.mark.s3
def test_pause_and_resume_several_times_is_exact(client, engine, stack, start_worker, big_csv):
    workers_for(stack, start_worker, IMPORT_MAX_ROWS_PER_S=60_000)
    tid = upload(client, big_csv).get_json()["id"]
    mark = 0
    for _ in range(3):
        mark = wait_rows(client, tid, mark + 30_000)["last_row"]
        assert client.post(f"/pause/{tid}").status_code == 202
        paused = wait_status(client, tid, "PAUSED")
        checkpoint_matches_rows(engine, paused)
        listed = {t["id"]: t for t in client.get("/paused_tasks").get_json()["tasks"]}
        assert listed[tid]["last_row"] == paused["last_row"]
        assert task(client, tid)["last_row"] == paused["last_row"]  # nothing moves while paused
        assert client.post(f"/resume/{tid}").status_code == 202
    done = wait_status(client, tid, "COMPLETED")
    assert done["rows_imported"] == done["last_row"] == N and done["progress"] == 1
    assert_exact(engine, tid, N)
    # Removed once COMPLETED is committed (a request later, in object storage).
    wait_for(lambda: not stored(engine_upload_path(engine, tid)), 10, "the upload removed")


def test_terminate_wakes_the_workers_at_once(client, engine, stack, start_worker, tmp_path):
    """A terminate is broadcast to the workers: no poll is needed (here it is an hour)."""
    workers_for(stack, start_worker, CONTROL_POLL_S=3600)
    tid = upload(client, write_rows(tmp_path / "a.csv", 3_000)).get_json()["id"]
    wait_status(client, tid, "COMPLETED")
    assert client.post(f"/terminate/{tid}").status_code == 202
    wait_status(client, tid, "REVOKED", timeout=30)
    assert_exact(engine, tid, 0)


def engine_upload_path(engine, tid) -> str:
    with engine.connect() as conn:
        return conn.execute(text("SELECT upload_path FROM tasks WHERE id=:t"), {"t": tid}).scalar()


@pytest.mark.s3
def test_terminate_running_paused_and_completed_leaves_nothing(
    client, engine, stack, start_worker, tmp_path
):
    workers_for(stack, start_worker, IMPORT_MAX_ROWS_PER_S=40_000)
    small = write_rows(tmp_path / "small.csv", 5_000)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3\n4,5\n")
    completed = upload(client, small).get_json()["id"]
    failed_rows = upload(client, bad).get_json()["id"]
    wait_status(client, completed, "COMPLETED")
    wait_status(client, failed_rows, "COMPLETED")
    running = upload(client, write_rows(tmp_path / "r.csv", 100_000)).get_json()["id"]
    paused = upload(client, write_rows(tmp_path / "p.csv", 100_000, seed=2)).get_json()["id"]
    wait_rows(client, running, 2_000)
    wait_rows(client, paused, 2_000)
    client.post(f"/pause/{paused}")
    wait_status(client, paused, "PAUSED")
    paths = {t: engine_upload_path(engine, t) for t in (running, paused)}

    for tid in (running, paused, completed, failed_rows):
        assert client.post(f"/terminate/{tid}").status_code == 202
    for tid in (running, paused, completed, failed_rows):
        revoked = wait_status(client, tid, "REVOKED")
        assert revoked["finished_at"]
        assert_exact(engine, tid, 0)
        assert client.get(f"/tasks/{tid}/errors").get_json()["errors"] == []
        assert client.post(f"/resume/{tid}").status_code == 409
    assert not any(stored(p) for p in paths.values())
    revoked_ids = {t["id"] for t in client.get("/terminated_tasks").get_json()["tasks"]}
    assert revoked_ids == {running, paused, completed, failed_rows}
    # None reappear: a later import runs through the same workers, then still none.
    later = upload(client, small).get_json()["id"]
    wait_status(client, later, "COMPLETED")
    for tid in (running, paused, completed):
        assert_exact(engine, tid, 0)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM paused_tasks")).scalar() == 0


def test_eight_concurrent_resumes_import_each_row_once(app, engine, stack, start_worker, big_csv):
    workers_for(stack, start_worker, IMPORT_MAX_ROWS_PER_S=100_000)
    client = app.test_client()
    tid = upload(client, big_csv).get_json()["id"]
    wait_rows(client, tid, 20_000)
    client.post(f"/pause/{tid}")
    wait_status(client, tid, "PAUSED")
    barrier, codes = threading.Barrier(8), []

    def resume():
        c = app.test_client()
        barrier.wait()
        codes.append(c.post(f"/resume/{tid}").status_code)

    threads = [threading.Thread(target=resume) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] * 7 + [202]
    wait_status(client, tid, "COMPLETED")
    assert_exact(engine, tid, N)


def test_pause_frees_the_worker(client, stack, start_worker, tmp_path):
    start_worker(concurrency=1, IMPORT_MAX_ROWS_PER_S=20_000)
    first = upload(client, write_rows(tmp_path / "a.csv", 100_000)).get_json()["id"]
    wait_rows(client, first, 1_000)
    client.post(f"/pause/{first}")
    wait_status(client, first, "PAUSED")
    # The only worker slot is free again: a second import runs to the end.
    second = upload(client, write_rows(tmp_path / "b.csv", 2_000)).get_json()["id"]
    wait_status(client, second, "COMPLETED")
    assert task(client, first)["status"] == "PAUSED"


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)  # many workers: Redis
def test_a_busy_worker_leaves_the_next_task_to_an_idle_one(client, stack, start_worker, tmp_path):
    """A worker running an import reserves no second message, so a worker that
    comes later takes the queued task at once. (Celery's early ack frees the
    prefetch slot when a run starts: without worker_disable_prefetch, the busy
    worker takes the next message and sits on it until its import ends.)"""
    import redis

    from app import RUNS_QUEUE

    # No sweeper rings the queued task again meanwhile (it would after 30 s).
    patient = {"HEARTBEAT_TIMEOUT_S": 600}
    start_worker(concurrency=1, IMPORT_MAX_ROWS_PER_S=2_000, **patient)
    first = upload(client, write_rows(tmp_path / "a.csv", 100_000)).get_json()["id"]
    wait_rows(client, first, 1)  # runs for 50 s on the only worker
    second = upload(client, write_rows(tmp_path / "b.csv", 2_000)).get_json()["id"]
    # Its message is in Redis (queued, or taken and unacked) before a second
    # worker exists: only the busy one can have taken it.
    broker = redis.Redis.from_url(stack["REDIS_URL"])
    wait_for(lambda: broker.llen(RUNS_QUEUE) + broker.hlen("unacked"), 10, "the message")
    start_worker(concurrency=1, **patient)
    wait_status(client, second, "COMPLETED", timeout=45)
    assert task(client, first)["status"] == "PROCESSING"


def test_pause_is_obeyed_within_a_batch(client, stack, start_worker, tmp_path):
    rate = 20_000  # throttled batches are rate / 20 = 1,000 rows
    start_worker(concurrency=1, IMPORT_MAX_ROWS_PER_S=rate)
    tid = upload(client, write_rows(tmp_path / "a.csv", 100_000)).get_json()["id"]
    wait_rows(client, tid, 5_000)
    at_request = client.post(f"/pause/{tid}").get_json()["last_row"]
    paused = wait_status(client, tid, "PAUSED")
    assert 0 <= paused["last_row"] - at_request <= rate // 20


@pytest.mark.parametrize("action, final", [("pause", "PAUSED"), ("terminate", "REVOKED")])
def test_actions_racing_completion_end_consistent(
    client, engine, stack, start_worker, tmp_path, action, final
):
    """An action and the run's completing commit, forced into each order in turn."""
    # The whole file is one batch: the run's only commit is the one that completes it.
    worker = start_worker(concurrency=1, IMPORT_BATCH_SIZE=100_000, IMPORT_BATCH_SECONDS=60)
    rows = 20_000
    path = write_rows(tmp_path / "r.csv", rows)

    # The action first: it lands while the run holds its last batch, uncommitted.
    tid = frozen_before_completion(client, engine, stack, worker, path)
    assert client.post(f"/{action}/{tid}").status_code == 202
    thaw(worker)
    t = wait_status(client, tid, final)
    assert t["last_row"] == 0  # the completing batch was dropped, never half-kept
    if final == "PAUSED":
        checkpoint_matches_rows(engine, t)
        assert client.post(f"/resume/{tid}").status_code == 202
        wait_status(client, tid, "COMPLETED")
        assert_exact(engine, tid, rows)
    else:
        assert_exact(engine, tid, 0)

    # The completion first: the action reads PROCESSING, then meets COMPLETED: a
    # pause is refused, a terminate undoes the completed import.
    tid = frozen_before_completion(client, engine, stack, worker, path)
    with commit_then_action(stack, engine, tid, lambda: thaw(worker)) as act:
        code = act(lambda: client.post(f"/{action}/{tid}").status_code)
    if final == "PAUSED":
        assert code == 409
        assert wait_status(client, tid, "COMPLETED")["last_row"] == rows
        assert client.post(f"/{action}/{tid}").status_code == 409
        assert_exact(engine, tid, rows)
    else:
        assert code == 202
        assert wait_status(client, tid, "REVOKED")["last_row"] == rows  # it had completed
        assert_exact(engine, tid, 0)


def frozen_before_completion(client, engine, stack, worker, path) -> int:
    """Upload `path` and freeze the worker while it runs the task, before its commit."""
    for _ in range(20):  # each miss (the run was quicker than the poll) is a new upload
        tid = upload(client, path).get_json()["id"]
        status = wait_for(
            lambda tid=tid: (s := task(client, tid)["status"]) in ("PROCESSING", "COMPLETED") and s,
            60,
            f"task {tid} claimed",
            interval=0.005,
        )
        if status == "PROCESSING":
            freeze(worker, stack, engine, tid)
            if task(client, tid)["status"] == "PROCESSING":
                return tid
            thaw(worker)
        wait_status(client, tid, "COMPLETED")
    raise AssertionError("the run always committed before it could be frozen")


@contextmanager
def commit_then_action(stack, engine, tid, release_run):
    """Yield `act(call)`: runs `call` (an action) so that it starts before the run's
    pending commit lands and is decided after it.

    PostgreSQL: the test holds the task's row; the thawed run queues for it first,
    the action second; letting go hands the row to them in that order. SQLite runs
    one writer at a time, so the action simply comes after the commit.
    """
    if not stack.get("DATABASE_URL"):

        def after(call):
            release_run()
            wait_status_sql(engine, tid, "COMPLETED")
            return call()

        yield after
        return
    holder = engine.connect()
    tx = holder.begin()
    holder.execute(text("SELECT id FROM tasks WHERE id = :t FOR UPDATE"), {"t": tid})
    me = holder.execute(text("SELECT pg_backend_pid()")).scalar()

    def waiting_on(pid) -> list[int]:
        with engine.connect() as conn:
            query = "SELECT pid FROM pg_stat_activity WHERE :p = ANY(pg_blocking_pids(pid))"
            return conn.execute(text(query), {"p": pid}).scalars().all()

    def act(call):
        release_run()
        (run_pid,) = wait_for(lambda: waiting_on(me), 60, "the run's commit to queue")
        result = []
        thread = threading.Thread(target=lambda: result.append(call()))
        thread.start()
        wait_for(lambda: waiting_on(run_pid), 60, "the action to queue behind the run")
        tx.rollback()
        thread.join()
        return result[0]

    try:
        yield act
    finally:
        if tx.is_active:
            tx.rollback()
        holder.close()


def wait_status_sql(engine, tid, status) -> None:
    def reached():
        with engine.connect() as conn:
            query = text("SELECT status FROM tasks WHERE id = :t")
            return conn.execute(query, {"t": tid}).scalar() == status

    wait_for(reached, 60, f"task {tid} {status}")


@pytest.mark.s3
def test_files_of_every_shape_import_exactly(client, stack, start_worker, tmp_path):
    start_worker()
    cases = {
        "quoted.csv": (b'a,b\n"line one\nline two",1\n"x, y",2\n', {}),
        "bom.csv": ("\ufeffname,n\n\u00c5sa,1\n".encode(), {}),
        "noheader.csv": (b"1,2\n3,4\n", {"has_header": "false"}),
        "semi.csv": ("a;b\n\u00e7;1\n".encode("cp1252"), {"delimiter": ";", "encoding": "cp1252"}),
        "header_only.csv": (b"a,b\n", {}),
        "ragged.csv": (b"a,b\n1,2\n3\n4,5,6\n7,8\n", {}),
        # Past the first 64 KB a NUL byte or an undecodable byte is a row error.
        "late_bad.csv": (b"a,b\n" + b"x,1\n" * 20_000 + b"nul\0,2\n\xff\xfe,3\nok,4\n", {}),
    }
    ids = {}
    for name, (content, form) in cases.items():
        (tmp_path / name).write_bytes(content)
        response = upload(client, tmp_path / name, **form)
        assert response.status_code == 202, response.get_json()
        ids[name] = response.get_json()["id"]

    def entries(name):
        wait_status(client, ids[name], "COMPLETED")
        body = client.get(f"/csv_entries?task_id={ids[name]}").get_json()
        return [(e["row_number"], e["data"]) for e in body["entries"]]

    assert entries("quoted.csv") == [
        (1, {"a": "line one\nline two", "b": "1"}),
        (2, {"a": "x, y", "b": "2"}),
    ]
    assert entries("bom.csv") == [(1, {"name": "\u00c5sa", "n": "1"})]
    assert entries("noheader.csv") == [
        (1, {"col1": "1", "col2": "2"}),
        (2, {"col1": "3", "col2": "4"}),
    ]
    assert entries("semi.csv") == [(1, {"a": "\u00e7", "b": "1"})]
    assert entries("header_only.csv") == []
    header_only = task(client, ids["header_only.csv"])
    assert header_only["progress"] == 1 and header_only["rows_imported"] == 0
    assert [n for n, _ in entries("ragged.csv")] == [1, 4]
    errors = client.get(f"/tasks/{ids['ragged.csv']}/errors").get_json()["errors"]
    assert [(e["row_number"], e["line_number"], e["raw"]) for e in errors] == [
        (2, 3, "3\n"),
        (3, 4, "4,5,6\n"),
    ]
    wait_status(client, ids["late_bad.csv"], "COMPLETED")
    late = entries_all(client, ids["late_bad.csv"])
    assert len(late) == 20_001 and late[-1] == (20_003, {"a": "ok", "b": "4"})
    errors = client.get(f"/tasks/{ids['late_bad.csv']}/errors").get_json()["errors"]
    assert [(e["row_number"], e["line_number"]) for e in errors] == [
        (20_001, 20_002),
        (20_002, 20_003),
    ]
    assert "NUL" in errors[0]["reason"] and "utf-8" in errors[1]["reason"]
    ragged = task(client, ids["ragged.csv"])
    assert (ragged["rows_imported"], ragged["error_count"], ragged["last_row"]) == (2, 2, 4)


def entries_all(client, task_id) -> list:
    out, path = [], f"/csv_entries?task_id={task_id}&limit=1000"
    while path:
        body = client.get(path).get_json()
        out += [(e["row_number"], e["data"]) for e in body["entries"]]
        path = body["next"]
    return out


def test_too_many_errors_fail_the_task_and_keep_its_rows(
    client, engine, stack, start_worker, tmp_path
):
    start_worker()
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n" + "1,2\n" * 10 + "x\n" * 5 + "3,4\n" * 10)
    tid = upload(client, path, max_errors=2).get_json()["id"]
    failed = wait_status(client, tid, "FAILED")
    assert "max_errors" in failed["error"] and failed["error_count"] == 3
    assert row_stats(engine, tid)[0] == failed["rows_imported"] >= 10
    assert client.post(f"/resume/{tid}").status_code == 409
    assert client.post(f"/terminate/{tid}").status_code == 202
    wait_status(client, tid, "REVOKED")
    assert_exact(engine, tid, 0)


def test_entries_page_by_key_across_tasks(client, stack, start_worker, tmp_path):
    start_worker()
    a = upload(client, write_rows(tmp_path / "a.csv", 250)).get_json()["id"]
    b = upload(client, write_rows(tmp_path / "b.csv", 120, seed=3)).get_json()["id"]
    wait_status(client, a, "COMPLETED")
    wait_status(client, b, "COMPLETED")
    seen, path = [], f"/csv_entries?task_id={a}&limit=100"
    while path:
        body = client.get(path).get_json()
        seen += [e["row_number"] for e in body["entries"]]
        path = body["next"]
    assert seen == list(range(1, 251))
    everything, path = [], "/csv_entries?limit=100"
    while path:
        body = client.get(path).get_json()
        everything += [(e["task_id"], e["row_number"]) for e in body["entries"]]
        assert all(e["id"] == f"{e['task_id']}:{e['row_number']}" for e in body["entries"])
        path = body["next"]
    assert everything == [(a, n) for n in range(1, 251)] + [(b, n) for n in range(1, 121)]
    wait_for(lambda: client.get("/healthz").get_json()["workers"] >= 1, 30, "worker in healthz")
