"""A batch of members, applied set-based inside its checkpoint transaction.

Teams, then users, then memberships, each in one order (by name, by email, by
key) so two tasks' batches wait on each other rather than deadlock. A team or
user that exists is locked (FOR KEY SHARE on PostgreSQL) before anything is
attached to it: a rollback deciding whether to delete it locks it FOR UPDATE,
so it either sees this batch's membership or deletes the row before this batch
can use it, and then this batch creates it again (the loop in `_ensure`). On
SQLite the one write lock serialises the two.

The counters go into tasks.stats in the same transaction: a batch counts
exactly once, whether it commits or a later run redoes it.
"""

from collections.abc import Callable

import orjson
from sqlalchemy import Table, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.core.models import Task
from app.kinds.teams.models import Membership, Team, User
from app.kinds.teams.rows import Member

T = Task.__table__
TEAMS, USERS, MEMBERS = Team.__table__, User.__table__, Membership.__table__

CHUNK = 500  # keys per statement: well under SQLite's 32,766 parameters
ATTEMPTS = 20  # a row deleted under us by a rollback, again and again: give up loudly

COUNTERS = ("teams_created", "users_created", "memberships_created", "rows_unchanged")
KEPT = ("kept_teams", "kept_users")


def stats_of(task) -> dict:
    """The task's counters, every one present (zero before its first batch)."""
    return {k: 0 for k in COUNTERS + KEPT} | orjson.loads(task.stats or "{}")


def add_stats(conn, task_id: int, delta: dict) -> None:
    """Add to the task's counters in this transaction (its row is already ours)."""
    row = conn.execute(select(T.c.stats).where(T.c.id == task_id)).first()
    stats = orjson.loads(row.stats or "{}")
    for key, value in delta.items():
        stats[key] = stats.get(key, 0) + value
    conn.execute(update(T).where(T.c.id == task_id).values(stats=orjson.dumps(stats).decode()))


def _insert(conn, table: Table):
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def _chunks(items: list):
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _ensure(conn, table: Table, key: str, rows: dict, task_id: int, now: float):
    """Ids of the rows named by `rows` (key -> its other values), creating the
    missing ones; return (ids, how many this call created)."""
    col = table.c[key]
    ids: dict = {}
    created = 0
    for _ in range(ATTEMPTS):
        missing = sorted(k for k in rows if k not in ids)
        for part in _chunks(missing):  # what exists, locked against a rollback's delete
            stmt = select(col, table.c.id).where(col.in_(part)).order_by(col)
            ids.update(conn.execute(stmt.with_for_update(read=True, key_share=True)).all())
        missing = [k for k in missing if k not in ids]
        if not missing:
            return ids, created
        for part in _chunks(missing):
            values = [
                {key: k, **rows[k], "created_at": now, "created_by_task": task_id} for k in part
            ]
            stmt = _insert(conn, table).values(values).on_conflict_do_nothing(index_elements=[key])
            made = conn.execute(stmt.returning(col, table.c.id)).all()
            created += len(made)
            ids.update(made)
        # Names another transaction inserted first: locked on the next pass.
    raise RuntimeError(f"{table.name}: rows keep vanishing under a concurrent rollback")


def writer(task_id: int, members: list[Member]) -> Callable:
    """write(conn): apply `members` (in row order) and count what they did."""

    def write(conn) -> None:
        if not members:
            return
        now = conn.execute(select(T.c.heartbeat_at).where(T.c.id == task_id)).scalar_one()
        teams = {m.team: {} for m in members}
        users: dict = {}
        for m in members:  # the first row naming a user names it
            users.setdefault(m.email, {"name": m.name})
        team_ids, teams_created = _ensure(conn, TEAMS, "name", teams, task_id, now)
        user_ids, users_created = _ensure(conn, USERS, "email", users, task_id, now)
        pairs: dict = {}
        for m in members:  # the first row naming a membership gives its role
            pairs.setdefault((team_ids[m.team], user_ids[m.email]), m.role)
        created = 0
        for part in _chunks(sorted(pairs)):
            values = [
                {
                    "team_id": t,
                    "user_id": u,
                    "role": pairs[t, u],
                    "created_at": now,
                    "created_by_task": task_id,
                }
                for t, u in part
            ]
            stmt = _insert(conn, MEMBERS).values(values).on_conflict_do_nothing()
            created += len(conn.execute(stmt.returning(MEMBERS.c.team_id)).all())
        add_stats(
            conn,
            task_id,
            {
                "teams_created": teams_created,
                "users_created": users_created,
                "memberships_created": created,
                "rows_unchanged": len(members) - created,
            },
        )

    return write
