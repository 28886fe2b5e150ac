"""Read-only queries behind the API's lists: keyset pages, never OFFSET."""

from sqlalchemy import Connection, select, tuple_

from app.core.models import CsvEntry, PausedTask, Task, TaskError

T, P = Task.__table__, PausedTask.__table__
C, E = CsvEntry.__table__, TaskError.__table__


def get_task(conn: Connection, task_id: int):
    """A task, with its pause time when paused."""
    stmt = select(T, P.c.paused_at).outerjoin(P, P.c.task_id == T.c.id)
    return conn.execute(stmt.where(T.c.id == task_id)).first()


def tasks_page(conn: Connection, limit: int, before: int | None, status: str | None = None):
    """Tasks newest first, with their pause time when paused."""
    stmt = select(T, P.c.paused_at).outerjoin(P, P.c.task_id == T.c.id)
    if status:
        stmt = stmt.where(T.c.status == status)
    if before is not None:
        stmt = stmt.where(T.c.id < before)
    return conn.execute(stmt.order_by(T.c.id.desc()).limit(limit)).all()


def paused_page(conn: Connection, limit: int, before: int | None):
    """Paused tasks (from the paused_tasks snapshot), newest first."""
    stmt = select(T, P.c.paused_at).join(P, P.c.task_id == T.c.id)
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
