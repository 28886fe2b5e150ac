"""Read-only queries behind the API's lists: keyset pages, never OFFSET."""

from sqlalchemy import Connection, literal_column, select, tuple_

from app.core.database import NOW_SQL
from app.core.models import CsvEntry, PausedTask, Task, TaskError

T, P = Task.__table__, PausedTask.__table__
C, E = CsvEntry.__table__, TaskError.__table__


def _tasks(conn: Connection, paused_only: bool = False):
    """Tasks with their pause time, and the database's clock (db_now) to judge
    whether a heartbeat is stale."""
    now = literal_column(NOW_SQL[conn.dialect.name]).label("db_now")
    stmt = select(T, P.c.paused_at, now)
    if paused_only:
        return stmt.join(P, P.c.task_id == T.c.id)
    return stmt.outerjoin(P, P.c.task_id == T.c.id)


def get_task(conn: Connection, task_id: int):
    """A task, with its pause time when paused."""
    stmt = _tasks(conn)
    return conn.execute(stmt.where(T.c.id == task_id)).first()


def tasks_page(conn: Connection, limit: int, before: int | None, status: str | None = None):
    """Tasks newest first, with their pause time when paused."""
    stmt = _tasks(conn)
    if status:
        stmt = stmt.where(T.c.status == status)
    if before is not None:
        stmt = stmt.where(T.c.id < before)
    return conn.execute(stmt.order_by(T.c.id.desc()).limit(limit)).all()


def paused_page(conn: Connection, limit: int, before: int | None):
    """Paused tasks (from the paused_tasks snapshot), newest first."""
    stmt = _tasks(conn, paused_only=True)
    if before is not None:
        stmt = stmt.where(T.c.id < before)
    return conn.execute(stmt.order_by(T.c.id.desc()).limit(limit)).all()


def entries_page(conn: Connection, limit: int, after, task_id: int | None):
    """Imported rows in import order, by primary key: task by task, row by row.

    `after` is the key (task_id, row_number) the page starts after.
    """
    stmt = select(C.c.task_id, C.c.row_number, C.c.data)
    if task_id is not None:
        stmt = stmt.where(C.c.task_id == task_id)
    if after is not None:
        stmt = stmt.where(tuple_(C.c.task_id, C.c.row_number) > tuple_(*after))
    return conn.execute(stmt.order_by(C.c.task_id, C.c.row_number).limit(limit)).all()


def headers(conn: Connection, task_ids) -> dict[int, str]:
    stmt = select(T.c.id, T.c.header).where(T.c.id.in_(set(task_ids)))
    return dict(conn.execute(stmt).all())


def errors_page(conn: Connection, task_id: int, limit: int, after: int | None):
    stmt = select(E.c.id, E.c.row_number, E.c.line_number, E.c.raw, E.c.reason).where(
        E.c.task_id == task_id
    )
    if after is not None:
        stmt = stmt.where(E.c.id > after)
    return conn.execute(stmt.order_by(E.c.id).limit(limit)).all()
