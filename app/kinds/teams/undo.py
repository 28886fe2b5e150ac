"""The rollback of a teams task: exactly what it created, nothing it did not.

First its memberships go. Then each team and user it created: deleted if no
membership uses it, else kept (a membership of another task now uses it) with
`created_by_task` set NULL and counted in the task's `kept`; the why goes to the
log. The decision is taken under a lock: the rows are locked FOR UPDATE on
PostgreSQL (a batch attaching to one holds FOR KEY SHARE on it, see writes.py),
and SQLite has one writer. Every step is its own short transaction fenced by
the rollback's token, and safe to redo after a crash: what it already did no
longer carries this task's id.
"""

import logging
import time

from sqlalchemy import Table, delete, func, select, tuple_, update
from sqlalchemy.exc import OperationalError

from app.core.models import Task
from app.core.store import Store
from app.kinds.teams.writes import MEMBERS, TEAMS, USERS, add_stats

log = logging.getLogger(__name__)

T = Task.__table__
STEP = 5_000  # rows per rollback transaction
RETRIES = 5
SHOWN = 10  # kept rows named in one log line


class Lost(Exception):
    """The rollback's token is no longer the task's: another rollback took over."""


def _fenced(store: Store, task_id: int, token: str, work) -> int:
    """Run work(conn) in one transaction that holds the task; retry lock errors."""
    for attempt in range(RETRIES):
        try:
            with store.tx() as conn:
                held = conn.execute(
                    update(T)
                    .where(T.c.id == task_id, T.c.run_token == token)
                    .values(heartbeat_at=store.now)
                ).rowcount
                if held != 1:
                    raise Lost
                return work(conn)
        except OperationalError:  # a deadlock with a batch, a dropped link: try again
            if attempt == RETRIES - 1:
                raise
            log.warning("task %s: rollback step failed, retrying", task_id, exc_info=True)
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def _delete_memberships(task_id: int):
    def work(conn) -> int:
        mine = (
            select(MEMBERS.c.team_id, MEMBERS.c.user_id)
            .where(MEMBERS.c.created_by_task == task_id)
            .limit(STEP)
        )
        key = tuple_(MEMBERS.c.team_id, MEMBERS.c.user_id)
        return conn.execute(delete(MEMBERS).where(key.in_(mine))).rowcount

    return work


def _undo_created(table: Table, label: str, what: str, used_by, task_id: int):
    """A step over the rows of `table` the task created: delete, or keep if used."""

    def work(conn) -> int:
        ids = list(
            conn.execute(
                select(table.c.id)
                .where(table.c.created_by_task == task_id)
                .order_by(table.c[label])  # the order batches lock in: no deadlock
                .limit(STEP)
                .with_for_update()
            ).scalars()
        )
        if not ids:
            return 0
        # Asked only now, with the rows locked: no batch can attach to them meanwhile.
        users = conn.execute(
            select(used_by, func.min(MEMBERS.c.created_by_task), func.count())
            .where(used_by.in_(ids))
            .group_by(used_by)
        ).all()
        kept = {row[0]: row for row in users}
        if kept:
            conn.execute(
                update(table).where(table.c.id.in_(list(kept))).values(created_by_task=None)
            )
            add_stats(conn, task_id, {f"kept_{what}": len(kept)})
            names = dict(
                conn.execute(
                    select(table.c.id, table.c[label]).where(table.c.id.in_(list(kept)[:SHOWN]))
                ).all()
            )
            log.info(
                "task %s rollback: kept %d %s that other tasks' memberships now use: %s%s",
                task_id,
                len(kept),
                what,
                "; ".join(
                    f"{names[i]!r} ({kept[i][2]} membership(s), e.g. of task {kept[i][1]})"
                    for i in names
                ),
                "; ..." if len(kept) > SHOWN else "",
            )
        gone = [i for i in ids if i not in kept]
        if gone:
            conn.execute(delete(table).where(table.c.id.in_(gone)))
        return len(ids)

    return work


def undo(store: Store, task_id: int, token: str) -> bool:
    """Remove the task's memberships, teams and users; False if the token was lost."""
    steps = (
        _delete_memberships(task_id),
        _undo_created(TEAMS, "name", "teams", MEMBERS.c.team_id, task_id),
        _undo_created(USERS, "email", "users", MEMBERS.c.user_id, task_id),
    )
    try:
        for work in steps:
            while _fenced(store, task_id, token, work):
                pass
    except Lost:
        return False
    return True
