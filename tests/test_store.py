"""The store alone, on a real database: transactions, fencing, atomic transitions."""

import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.core import states as S
from app.core.states import Outcome
from app.core.store import Step
from tests.helpers import row_stats


@pytest.fixture
def store(app):
    return app.extensions["store"]


@pytest.fixture
def task_id(store):
    return store.create_task(kind="import", filename="t.csv", header='["a"]', bytes_total=100)


def step(store, task_id, first: int, n: int, done=False) -> Step:
    rows = [(i, f'["{i}"]') for i in range(first, first + n)]
    return Step(
        checkpoint={"last_row": first + n - 1, "bytes_done": first + n},
        rows=n,
        done=done,
        write=store.row_writer(task_id, rows, []),
    )


def checkpoint(engine, task_id):
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT last_row, rows_imported, bytes_done FROM tasks WHERE id = :t"),
            {"t": task_id},
        ).one()


def test_rows_and_checkpoint_commit_together_or_not_at_all(store, task_id, engine):
    token, _ = store.claim(task_id)
    assert store.commit(task_id, token, step(store, task_id, 1, 10)) == Outcome.CONTINUE
    broken = step(store, task_id, 11, 10)
    inner = broken.write

    def write_then_crash(conn):
        inner(conn)  # the rows are written...
        raise RuntimeError("crash before commit")  # ...and the transaction dies

    broken.write = write_then_crash
    with pytest.raises(RuntimeError):
        store.commit(task_id, token, broken)
    assert row_stats(engine, task_id) == (10, 10, 1, 10)
    assert tuple(checkpoint(engine, task_id)) == (10, 10, 11)


def test_a_stale_run_token_writes_nothing(store, task_id, engine):
    stale, _ = store.claim(task_id)
    assert store.sweep(timeout=-1) == [task_id]  # its holder "went silent": requeued
    fresh, _ = store.claim(task_id)
    assert store.commit(task_id, stale, step(store, task_id, 1, 5)) == Outcome.LOST
    assert row_stats(engine, task_id)[0] == 0
    assert store.commit(task_id, fresh, step(store, task_id, 1, 5, done=True)) == Outcome.COMPLETED
    assert row_stats(engine, task_id) == (5, 5, 1, 5)


def test_terminate_fences_out_the_running_run(store, task_id, engine):
    token, _ = store.claim(task_id)
    assert store.transition(task_id, "terminate") == (S.TERMINATING, True)
    assert store.commit(task_id, token, step(store, task_id, 1, 5)) == Outcome.LOST
    assert row_stats(engine, task_id)[0] == 0


def test_pause_is_obeyed_at_the_next_checkpoint_before_its_batch(store, task_id, engine):
    """The batch in hand when a pause is seen is not written: the pause is only the
    transition, whatever the batch's size; the next run reads that batch again."""
    token, _ = store.claim(task_id)
    assert store.commit(task_id, token, step(store, task_id, 1, 5)) == Outcome.CONTINUE
    assert store.transition(task_id, "pause") == (S.PAUSING, True)
    assert store.commit(task_id, token, step(store, task_id, 6, 5)) == Outcome.PAUSED
    assert tuple(checkpoint(engine, task_id)) == (5, 5, 6)
    assert row_stats(engine, task_id) == (5, 5, 1, 5)
    with engine.connect() as conn:
        snap = conn.execute(
            text("SELECT last_row FROM paused_tasks WHERE task_id=:t"), {"t": task_id}
        )
        assert snap.scalar() == 5
    # The paused run holds nothing: its token is gone.
    assert store.commit(task_id, token, step(store, task_id, 6, 5)) == Outcome.LOST
    assert store.transition(task_id, "resume") == (S.QUEUED, True)
    again, _ = store.claim(task_id)
    assert store.commit(task_id, again, step(store, task_id, 6, 5, done=True)) == Outcome.COMPLETED
    assert row_stats(engine, task_id) == (10, 10, 1, 10)


def test_duplicate_row_numbers_are_a_loud_error(store, task_id):
    token, _ = store.claim(task_id)
    store.commit(task_id, token, step(store, task_id, 1, 5))
    with pytest.raises(IntegrityError):
        store.commit(task_id, token, step(store, task_id, 5, 1))


def test_concurrent_resumes_change_the_task_once(store, task_id):
    store.transition(task_id, "pause")
    results, barrier = [], threading.Barrier(8)

    def resume():
        barrier.wait()
        results.append(store.transition(task_id, "resume"))

    threads = [threading.Thread(target=resume) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(changed for _, changed in results) == [False] * 7 + [True]
    assert {status for status, _ in results} == {S.QUEUED}


def test_claim_and_pause_race_ends_consistent(store):
    for _ in range(20):
        tid = store.create_task(kind="import", header='["a"]')
        barrier, out = threading.Barrier(2), {}

        def claim(tid=tid, barrier=barrier, out=out):
            barrier.wait()
            out["claim"] = store.claim(tid)

        def pause(tid=tid, barrier=barrier, out=out):
            barrier.wait()
            out["pause"] = store.transition(tid, "pause")

        threads = [threading.Thread(target=claim), threading.Thread(target=pause)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        status = store.get(tid).status
        if out["claim"] is None:  # the pause won while QUEUED
            assert out["pause"] == (S.PAUSED, True) and status == S.PAUSED
        else:  # the claim won; the pause waits for the run's next checkpoint
            assert out["pause"] == (S.PAUSING, True) and status == S.PAUSING


def test_sweeper_finishes_orphaned_pauses_and_frees_rollbacks(store, engine):
    pausing = store.create_task(kind="import", header='["a"]')
    token, _ = store.claim(pausing)
    store.transition(pausing, "pause")
    terminating = store.create_task(kind="import", header='["a"]')
    store.claim(terminating)
    store.transition(terminating, "terminate")
    store.claim_rollback(terminating)  # a rollback whose runner then died
    assert store.unheld_terminations() == []
    store.sweep(timeout=-1)
    assert store.get(pausing).status == S.PAUSED
    assert store.unheld_terminations() == [terminating]


def test_a_commit_that_landed_before_the_link_dropped_is_not_repeated(
    store, task_id, engine, monkeypatch
):
    """The connection dies after COMMIT reached the database: the retry must see it landed."""
    from sqlalchemy.exc import OperationalError

    from app.core import runner

    token, _ = store.claim(task_id)
    real, dropped = store.commit, []

    def commit_then_drop(*args):
        outcome = real(*args)
        if not dropped:
            dropped.append(True)
            raise OperationalError("COMMIT", {}, Exception("server closed the connection"))
        return outcome

    monkeypatch.setattr(store, "commit", commit_then_drop)
    assert runner._commit(store, task_id, token, step(store, task_id, 1, 5)) == Outcome.CONTINUE
    assert dropped and row_stats(engine, task_id) == (5, 5, 1, 5)
    assert runner._commit(store, task_id, token, step(store, task_id, 6, 5)) == Outcome.CONTINUE
    assert row_stats(engine, task_id) == (10, 10, 1, 10)


def test_a_sqlite_write_gets_the_lock_in_a_gap_between_two_held_transactions(tmp_path):
    """A write waiting for SQLite's lock gets it in the first short gap another writer
    leaves (an import between two batches), not a sleep of SQLite's busy handler later.

    The holder keeps the lock 200 ms, lets go for 20 ms, then keeps it a second.
    SQLite's busy handler, started within 22 ms of the first hold, tries at 178 and
    228 ms (1, 2, 5, ... 100 ms sleeps): it misses the gap and writes after the
    second hold. Asked for every 0.5 ms, the lock is taken in the gap: the waiting
    write lands first.
    """
    from sqlalchemy import create_engine

    from app.core.database import configure_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    configure_engine(engine)
    writes = engine.execution_options(sqlite_immediate=True)  # as the store's writes
    with writes.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE marks (who TEXT)")
    held = threading.Event()

    def holder():
        with writes.connect() as conn:
            raw = conn.connection.dbapi_connection
            raw.execute("BEGIN IMMEDIATE")
            held.set()
            time.sleep(0.2)
            raw.execute("COMMIT")
            time.sleep(0.02)
            raw.execute("BEGIN IMMEDIATE")  # waits if the other write got in
            raw.execute("INSERT INTO marks VALUES ('holder')")
            time.sleep(1.0)
            raw.execute("COMMIT")

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    with writes.begin() as conn:
        conn.exec_driver_sql("INSERT INTO marks VALUES ('waiter')")
    thread.join()
    with engine.connect() as conn:
        order = [who for (who,) in conn.exec_driver_sql("SELECT who FROM marks ORDER BY rowid")]
    assert order == ["waiter", "holder"]
    engine.dispose()


def test_sqlite_databases_are_created_with_16_kb_pages_and_older_ones_kept(tmp_path):
    """A database the service creates gets PAGE_SIZE pages (fewer page splits per
    batch); one created before keeps its pages (WAL fixes them) and works as it did."""
    import sqlite3

    from sqlalchemy import create_engine

    from app.core.database import PAGE_SIZE, configure_engine

    old = tmp_path / "old.db"
    with sqlite3.connect(old) as raw:
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("CREATE TABLE t (x)")
    assert PAGE_SIZE == 16384
    for path, pages in ((tmp_path / "new.db", PAGE_SIZE), (old, 4096)):
        engine = create_engine(f"sqlite:///{path}")
        configure_engine(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA page_size").scalar() == pages
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        engine.dispose()
