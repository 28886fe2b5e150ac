"""Faults and races for the teams kind, on both stacks.

A worker SIGKILLed mid-run or mid-rollback, and the same task delivered several
times at once, still leave each row applied once (or, rolled back, nothing).
A rollback and a batch of another task that attaches to a team the rollback is
deciding about are forced to meet, in both orders, by holding one transaction
open until the other is seen waiting for its lock.
"""

import threading

import pytest
from sqlalchemy import text

from app.core import runner
from app.core.dispatch import run_task
from app.core.states import Outcome
from app.kinds.teams import undo as teams_undo
from app.kinds.teams.job import TeamsJob
from app.kinds.teams.writes import MEMBERS, TEAMS
from tests.helpers import task, wait_for, wait_rows, wait_status
from tests.teams_helpers import (
    World,
    counts_of,
    creators,
    generated,
    tables,
    upload_teams,
    write_teams,
)

N = 12_000
RATE = 4_000
FAST_TAKEOVER = {"HEARTBEAT_TIMEOUT_S": 2}


def start(client, path) -> int:
    response = upload_teams(client, path)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def exact(client, engine, tid, rows, world=None) -> None:
    """The task's counters and the tables are what applying `rows` once gives."""
    world = world or World()
    counts = world.apply(rows)
    assert counts_of(task(client, tid)) == counts
    assert tables(engine) == world


def test_worker_killed_mid_run_is_taken_over(client, engine, start_worker, tmp_path):
    rows = generated(N, teams=80, seed=31)
    doomed = start_worker(concurrency=1, IMPORT_MAX_ROWS_PER_S=RATE, **FAST_TAKEOVER)
    tid = start(client, write_teams(tmp_path / "t.csv", rows))
    wait_rows(client, tid, 3_000)
    doomed.kill_group()  # SIGKILL: no checkpoint, no goodbye
    assert task(client, tid)["status"] == "PROCESSING"
    start_worker(concurrency=1, IMPORT_MAX_ROWS_PER_S=RATE, **FAST_TAKEOVER)
    done = wait_status(client, tid, "COMPLETED")
    assert done["rows_imported"] == N
    exact(client, engine, tid, rows)


def test_the_same_task_delivered_several_times_applies_each_row_once(
    client, engine, start_worker, tmp_path
):
    rows = generated(N, teams=80, seed=32)
    for _ in range(2):
        start_worker(concurrency=2, IMPORT_MAX_ROWS_PER_S=RATE)
    tid = start(client, write_teams(tmp_path / "t.csv", rows))  # delivery 1
    run_task.apply_async((tid,))
    run_task.apply_async((tid,))
    wait_rows(client, tid, 3_000)
    assert client.post(f"/pause/{tid}").status_code == 202
    wait_status(client, tid, "PAUSED")
    assert client.post(f"/resume/{tid}").status_code == 202
    run_task.apply_async((tid,))
    run_task.apply_async((tid,))
    wait_status(client, tid, "COMPLETED")
    run_task.apply_async((tid,))  # a late redelivery
    exact(client, engine, tid, rows)


def test_worker_killed_mid_rollback_is_finished_by_another(
    app, client, engine, start_worker, tmp_path
):
    before = generated(200, teams=5, seed=33)
    worker = start_worker(concurrency=1, **FAST_TAKEOVER)
    first = start(client, write_teams(tmp_path / "p.csv", before))
    wait_status(client, first, "COMPLETED")
    world = tables(engine)
    tid = start(client, write_teams(tmp_path / "t.csv", before[:50] + generated(N, seed=34)))
    wait_status(client, tid, "COMPLETED")
    worker.kill_group()
    assert client.post(f"/terminate/{tid}").status_code == 202
    # A rollback takes the task, removes a part of its memberships, and dies.
    store = app.extensions["store"]
    token, _ = store.claim_rollback(tid)
    assert teams_undo._fenced(store, tid, token, teams_undo._delete_memberships(tid)) > 0
    assert tables(engine) != world
    start_worker(concurrency=1, **FAST_TAKEOVER)  # its sweeper frees the task, then undoes it
    revoked = wait_status(client, tid, "REVOKED", timeout=60)
    assert revoked["kept"] == {"teams": 0, "users": 0}
    assert tables(engine) == world


# -- a rollback meets a batch attaching to what it created --------------------------------


def waiting_for_a_lock(stack, engine) -> bool:
    """PostgreSQL: some session waits for a row or transaction lock. SQLite: a writer
    waits for the one write lock, which cannot be seen: the order is the lock's."""
    if not stack.get("DATABASE_URL"):
        return True
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
            ).scalar()
        )


class Held:
    """Run fn in a thread; `write` (given to fn) stops inside its transaction until released."""

    def __init__(self, fn):
        self.inside, self.release = threading.Event(), threading.Event()
        self.result, self.error = None, None

        def body():
            try:
                self.result = fn(self.hold)
            except BaseException as exc:  # reported by join()
                self.error = exc

        self.thread = threading.Thread(target=body)

    def hold(self, work):
        def held(conn):
            out = work(conn)
            self.inside.set()
            assert self.release.wait(60)
            return out

        return held

    def start(self):
        self.thread.start()
        wait_for(lambda: self.inside.is_set() or self.error, 30, "the transaction under way")
        return self

    def join(self):
        self.release.set()
        self.thread.join(60)
        if self.error is not None:
            raise self.error
        return self.result


class Background:
    def __init__(self, fn):
        self.result, self.error = None, None

        def body():
            try:
                self.result = fn()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=body)
        self.thread.start()

    def join(self):
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.result


def first_batch(app, tid: int, hold=None):
    """Claim a teams task and commit its first batch (the whole small file)."""
    store = app.extensions["store"]
    token, row = store.claim(tid)
    steps = TeamsJob(store, row, app.config).steps()
    try:
        step = next(s for s in steps if s is not None)  # None: the reader is not ready
        if hold is not None:
            step.write = hold(step.write)
        return store.commit(tid, token, step)
    finally:
        steps.close()


@pytest.fixture
def created_then_terminated(app, client, tmp_path):
    """A completed teams task that created team X (and its users), now TERMINATING."""
    doomed = start(client, write_teams(tmp_path / "a.csv", [("X", "a@x.com", "", "")]))
    runner.run(app.extensions["store"], doomed, app.config, lambda _: None)
    assert task(client, doomed)["teams_created"] == 1
    other = start(client, write_teams(tmp_path / "b.csv", [("X", "b@x.com", "Bee", "")]))
    assert app.extensions["store"].transition(doomed, "terminate") == ("TERMINATING", True)
    return doomed, other


def test_a_batch_holding_a_team_makes_the_rollback_keep_it(
    app, client, engine, stack, created_then_terminated
):
    """The batch attached to X first: the rollback waits for it, then keeps X."""
    doomed, other = created_then_terminated
    batch = Held(lambda hold: first_batch(app, other, hold)).start()
    rollback = Background(lambda: runner.rollback(app.extensions["store"], doomed, app.config))
    wait_for(lambda: waiting_for_a_lock(stack, engine), 30, "the rollback waiting for the batch")
    assert batch.join() == Outcome.COMPLETED
    assert rollback.join() is True
    revoked = task(client, doomed)
    assert revoked["status"] == "REVOKED" and revoked["kept"] == {"teams": 1, "users": 0}
    assert tables(engine) == World({"X"}, {"b@x.com": "Bee"}, {("X", "b@x.com"): "member"})
    assert creators(engine)["teams"] == {"X": None}
    assert counts_of(task(client, other))["teams_created"] == 0


def test_a_rollback_deleting_a_team_makes_the_batch_create_it_again(
    app, client, engine, stack, created_then_terminated
):
    """The rollback locked X first and deletes it: the batch waits, then creates X anew."""
    doomed, other = created_then_terminated
    store = app.extensions["store"]
    token, row = store.claim_rollback(doomed)
    assert teams_undo._fenced(store, doomed, token, teams_undo._delete_memberships(doomed)) == 1
    teams_step = teams_undo._undo_created(TEAMS, "name", "teams", MEMBERS.c.team_id, doomed)
    undo = Held(lambda hold: teams_undo._fenced(store, doomed, token, hold(teams_step))).start()
    batch = Background(lambda: first_batch(app, other))
    wait_for(lambda: waiting_for_a_lock(stack, engine), 30, "the batch waiting for the rollback")
    assert undo.join() == 1  # X deleted: nothing used it
    assert batch.join() == Outcome.COMPLETED
    assert TeamsJob.undo(store, row, token, app.config) and store.finish_rollback(doomed, token)
    assert task(client, doomed)["kept"] == {"teams": 0, "users": 0}
    assert tables(engine) == World({"X"}, {"b@x.com": "Bee"}, {("X", "b@x.com"): "member"})
    assert creators(engine)["teams"] == {"X": other}
    assert counts_of(task(client, other))["teams_created"] == 1
