"""The state table: the checker refuses what it does not list, and every status write
goes through it (read in the code, and exercised event by event on both databases)."""

import ast
import re
from pathlib import Path

import pytest
from sqlalchemy import text

from app.core import states as S
from app.core.states import Outcome, RefusedTransition
from app.core.store import Step, Store

APP = Path(__file__).resolve().parent.parent / "app"


# -- the checker (no database) ---------------------------------------------------------


@pytest.mark.parametrize(
    "event, frm",
    [
        ("revoke", (S.PROCESSING,)),  # a rollback only finishes a TERMINATING task
        ("claim", (S.PAUSED,)),  # a paused task is resumed first
        ("resume", (S.REVOKED,)),
        ("terminate", (S.REVOKED,)),
        ("fail", (S.QUEUED, S.PROCESSING)),  # part of it is outside the table
        ("complete", ()),
        ("finish", None),  # no such event
    ],
)
def test_the_checker_refuses_what_the_table_does_not_list(event, frm):
    with pytest.raises(RefusedTransition):
        S.check(event, frm)


def test_the_checker_answers_what_the_table_lists():
    assert S.check("fail") == ((S.PROCESSING, S.PAUSING), S.FAILED)
    assert S.check("terminate", (S.COMPLETED,)) == ((S.COMPLETED,), S.TERMINATING)


def test_the_table_is_well_formed():
    for name, event in S.EVENTS.items():
        assert event.to in S.ALL and set(event.frm) <= set(S.ALL), name
        assert event.to not in event.frm and event.why, name
    assert {e.to for e in S.EVENTS.values()} == set(S.ALL)  # every status is reachable


@pytest.mark.parametrize(
    "status, actions",
    [
        (S.QUEUED, ["pause", "terminate"]),
        (S.PROCESSING, ["pause", "terminate"]),
        (S.PAUSING, ["resume", "terminate"]),
        (S.PAUSED, ["resume", "terminate"]),
        (S.COMPLETED, ["terminate"]),
        (S.FAILED, ["terminate"]),
        (S.TERMINATING, []),
        (S.REVOKED, []),
    ],
)
def test_actions_are_those_that_change_the_task(status, actions):
    assert S.actions(status) == actions


# -- every status write goes through Store._move ------------------------------------------


# What writes a task's status: SQLAlchemy's values()/insert()/update() or a Task(...) with a
# `status=` keyword, a {"status": ...} mapping passed to them, or SQL text doing it.
WRITERS = {"values", "insert", "update", "Task"}
RAW_SQL = re.compile(r"(?is)\b(update\s+tasks\b.*\bset\b.*\bstatus|insert\s+into\s+tasks\b)")


def _status_writes(tree: ast.AST, with_dicts: bool):
    """(function, line) of each place in a module that may write a task's status."""
    found = []

    def visit(node, function):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in WRITERS and any(k.arg == "status" for k in node.keywords):
                found.append((function, node.lineno))
        if with_dicts and isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
            found.extend((function, node.lineno) for k in keys if k == "status")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if RAW_SQL.search(node.value):
                found.append((function, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, None)
    return found


def test_no_status_is_written_outside_the_checked_function():
    """In all of app/, a task's status is written only in Store._move (and inserted as
    the table's "create" event): any other status write is one the table misses."""
    allowed = {("store.py", "_move"), ("store.py", "create_task")}
    # The web layer builds JSON shapes with a "status" key (tasks, errors, health).
    stray = []
    for path in APP.rglob("*.py"):
        with_dicts = path.parent.name != "web"
        for function, line in _status_writes(ast.parse(path.read_text()), with_dicts):
            if (path.name, function) not in allowed:
                stray.append(f"{path.relative_to(APP)}:{line} in {function}")
    assert stray == []


def test_the_store_names_every_event_it_may_write():
    """Each event of the table is written somewhere: the store names it, or a user action
    takes it; so the table lists no transition that nothing does."""
    source = (APP / "core" / "store.py").read_text()
    named = {
        node.args[1].value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", None) == "_move"
        and len(node.args) > 1
        and isinstance(node.args[1], ast.Constant)
    }
    by_action = {name for names in S.ACTION_EVENTS.values() for name in names}
    assert named | by_action | {"create"} == set(S.EVENTS)


def test_move_refuses_before_it_writes(app):
    store: Store = app.extensions["store"]
    tid = store.create_task(kind="import", header='["a"]')
    with store.tx() as conn, pytest.raises(RefusedTransition):
        store._move(conn, "revoke", frm=(S.QUEUED,))
    with store.tx() as conn, pytest.raises(RefusedTransition):
        store._move(conn, "unlisted")
    assert store.get(tid).status == S.QUEUED


# -- every event, exercised: it is the table's, and it stamps updated_at --------------------


@pytest.fixture
def store(app):
    return app.extensions["store"]


def test_every_event_is_checked_and_stamps_updated_at(store, engine, monkeypatch):
    seen = []
    real = store._move

    def spy(conn, event, *where, **kw):
        seen.append(event)
        return real(conn, event, *where, **kw)

    monkeypatch.setattr(store, "_move", spy)

    def stamped(tid, expect_status, fn, *args):
        """Run fn(*args) with the task's updated_at set back; it must come forward."""
        with engine.begin() as conn:
            conn.execute(text("UPDATE tasks SET updated_at = 1 WHERE id = :t"), {"t": tid})
        result = fn(*args)
        task = store.get(tid)
        assert task.status == expect_status and task.updated_at > 1, (seen[-1:], task)
        return result

    def new(**values):
        return store.create_task(kind="import", header='["a"]', **values)

    def step(last, done=False, errors=0):
        return Step(checkpoint={"last_row": last}, errors=errors, done=done)

    t = new()
    stamped(t, S.PAUSED, store.transition, t, "pause")
    stamped(t, S.QUEUED, store.transition, t, "resume")
    token, _ = stamped(t, S.PROCESSING, store.claim, t)
    stamped(t, S.PAUSING, store.transition, t, "pause")
    stamped(t, S.PROCESSING, store.transition, t, "resume")
    assert stamped(t, S.QUEUED, store.release, t, token) is True
    token, _ = store.claim(t)
    store.transition(t, "pause")
    assert stamped(t, S.PAUSED, store.release, t, token) is False
    store.transition(t, "resume")
    token, _ = store.claim(t)
    assert store.commit(t, token, step(1)) == Outcome.CONTINUE
    store.transition(t, "pause")
    assert stamped(t, S.PAUSED, store.commit, t, token, step(2)) == Outcome.PAUSED
    store.transition(t, "resume")
    token, _ = store.claim(t)
    assert stamped(t, S.COMPLETED, store.commit, t, token, step(2, done=True)) == "completed"

    strict = new(max_errors=0)
    token, _ = store.claim(strict)
    assert stamped(strict, S.FAILED, store.commit, strict, token, step(1, errors=1)) == "failed"

    failing = new()
    token, _ = store.claim(failing)
    assert stamped(failing, S.FAILED, store.fail, failing, token, "boom") is True

    stale = new()
    store.claim(stale)
    assert stale in stamped(stale, S.QUEUED, store.sweep, -1)  # heartbeat older than -1 s
    store.claim(stale)
    store.transition(stale, "pause")
    stamped(stale, S.PAUSED, store.sweep, -1)
    stamped(stale, S.TERMINATING, store.transition, stale, "terminate")
    token, _ = store.claim_rollback(stale)
    assert stamped(stale, S.REVOKED, store.finish_rollback, stale, token) is True

    assert set(seen) | {"create"} == set(S.EVENTS)


def test_the_sweeps_requeue_stamps_updated_at(store, engine):
    """A run whose heartbeat went silent goes back to QUEUED, and the task says when."""
    tid = store.create_task(kind="import", header='["a"]')
    store.claim(tid)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE tasks SET updated_at = heartbeat_at - 60 WHERE id = :t"), {"t": tid}
        )
    before = store.get(tid)
    assert store.sweep(timeout=-1) == [tid]
    after = store.get(tid)
    assert after.status == S.QUEUED and after.run_token is None
    assert after.updated_at > before.updated_at
