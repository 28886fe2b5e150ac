"""Task state in the database: transitions, claims, fenced checkpoints, rollback.

Knows nothing of HTTP or Celery. Every status change is one conditional
UPDATE; every checkpoint commit is fenced by the run token.
"""

import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine, delete, func, insert, literal_column, select, update

from app.core import states as S
from app.core.database import NOW_SQL, row_writer
from app.core.models import PausedTask, Task, TaskError

T = Task.__table__
P = PausedTask.__table__
E = TaskError.__table__


CONTINUE, PAUSED, COMPLETED, FAILED, LOST = "continue", S.PAUSED, S.COMPLETED, S.FAILED, "lost"

# Rows deleted per rollback transaction. SQLite's transaction holds the one write
# lock (other imports wait: ~60 ms at 50,000 rows); PostgreSQL's locks only the
# task's own rows, and fewer, larger ranges there cost less in all.
ROLLBACK_STEP = {"sqlite": 50_000, "postgresql": 250_000}


@dataclass
class Step:
    """One checkpointed batch: what to write and where the task stands after it."""

    checkpoint: dict
    rows: int = 0
    errors: int = 0
    done: bool = False
    write: Callable | None = None  # write(conn) inside the checkpoint transaction


class Store:
    def __init__(self, engine: Engine):
        self.engine = engine.execution_options(sqlite_immediate=True)  # writes
        self.reader = engine  # reads: no write lock taken
        self.dialect = engine.dialect.name
        self.now = literal_column(NOW_SQL[self.dialect])

    @contextmanager
    def tx(self):
        with self.engine.begin() as conn:
            yield conn

    def row_writer(self, task_id: int, rows: list, errors: list) -> Callable:
        """write(conn) inserting a batch's rows and row errors (see database.row_writer)."""
        return row_writer(self.dialect, task_id, rows, errors)

    def get(self, task_id: int):
        """The task row, or None."""
        with self.reader.connect() as conn:
            return conn.execute(select(T).where(T.c.id == task_id)).first()

    def status(self, task_id: int) -> str | None:
        """The task's status, or None (a read that takes no lock)."""
        with self.reader.connect() as conn:
            return conn.execute(select(T.c.status).where(T.c.id == task_id)).scalar()

    # -- creation and user actions -------------------------------------------------

    def create_task(self, **values) -> int:
        """Insert a QUEUED task and return its id."""
        now = self.now
        stmt = insert(T).values(
            status=S.QUEUED, created_at=now, updated_at=now, heartbeat_at=now, **values
        )
        with self.tx() as conn:
            return conn.execute(stmt.returning(T.c.id)).scalar_one()

    def transition(self, task_id: int, action: str) -> tuple[str, bool] | None:
        """Apply a user action atomically; return (status, changed) or None if no task.

        A compare-and-set on the status read; if another writer got there first,
        read again and decide again.
        """
        for _ in range(20):
            with self.tx() as conn:
                status = conn.execute(select(T.c.status).where(T.c.id == task_id)).scalar()
                if status is None:
                    return None
                to = S.target(action, status)
                if to is None:
                    return status, False
                if self._set_status(conn, task_id, status, to, requested_at=self.now):
                    return to, True
        raise RuntimeError(f"task {task_id}: too much contention on {action}")

    def _set_status(self, conn, task_id: int, frm: str, to: str, **extra) -> bool:
        values = {"status": to, "updated_at": self.now, **extra}
        if to in (S.PAUSED, S.TERMINATING, S.QUEUED):
            values.setdefault("run_token", None)
            values["heartbeat_at"] = self.now
        if to in (S.COMPLETED, S.FAILED, S.REVOKED):
            values["finished_at"] = self.now
        where = (T.c.id == task_id, T.c.status == frm)
        result = conn.execute(update(T).where(*where).values(**values))
        if result.rowcount != 1:
            return False
        if to == S.PAUSED:
            conn.execute(
                insert(P).from_select(
                    ["task_id", "last_row", "paused_at"],
                    select(T.c.id, T.c.last_row, self.now).where(T.c.id == task_id),
                )
            )
        elif frm == S.PAUSED:
            conn.execute(delete(P).where(P.c.task_id == task_id))
        return True

    # -- runs ----------------------------------------------------------------------

    def claim(self, task_id: int):
        """Take a QUEUED task for a new run; return (token, task row) or None."""
        token = uuid.uuid4().hex
        now = self.now
        stmt = (
            update(T)
            .where(T.c.id == task_id, T.c.status == S.QUEUED)
            .values(
                status=S.PROCESSING,
                run_token=token,
                heartbeat_at=now,
                updated_at=now,
                started_at=func.coalesce(T.c.started_at, now),
                run_started_at=now,
                run_start_row=T.c.last_row,
                run_start_bytes=T.c.bytes_done,
            )
            .returning(*T.c)
        )
        with self.tx() as conn:
            row = conn.execute(stmt).first()
        return (token, row) if row else None

    def commit(self, task_id: int, token: str, step: Step) -> str:
        """Write a batch and its checkpoint in one transaction, fenced by the token.

        Returns what the run must do next: CONTINUE, or PAUSED / COMPLETED /
        FAILED (the task has stopped), or LOST (terminated or taken over).

        A pause requested since the last checkpoint is obeyed before the batch is
        written: the batch is dropped (the next run reads it again from the
        checkpoint) and the transaction is a few statements, however large or
        slow the batch. So a pause waits for at most the commit under way.
        """
        now = self.now
        stmt = (
            update(T)
            .where(T.c.id == task_id, T.c.run_token == token, T.c.status == S.PROCESSING)
            .values(
                rows_imported=T.c.rows_imported + step.rows,
                error_count=T.c.error_count + step.errors,
                heartbeat_at=now,
                updated_at=now,
                **step.checkpoint,
            )
            .returning(T.c.error_count, T.c.max_errors)
        )
        with self.tx() as conn:
            row = conn.execute(stmt).first()
            if row is None:
                status = conn.execute(
                    select(T.c.status).where(T.c.id == task_id, T.c.run_token == token)
                ).scalar()
                if status == S.PAUSING and self._set_status(conn, task_id, S.PAUSING, S.PAUSED):
                    return PAUSED
                return LOST
            if step.write is not None:
                step.write(conn)
            if row.error_count > row.max_errors:
                error = f"{row.error_count} row errors passed max_errors={row.max_errors}"
                self._set_status(conn, task_id, S.PROCESSING, S.FAILED, run_token=None, error=error)
                return FAILED
            if step.done:
                self._set_status(conn, task_id, S.PROCESSING, S.COMPLETED, run_token=None)
                return COMPLETED
            if self.dialect == "postgresql":
                # A crash of the server may lose the last few batches, but only
                # whole, with their checkpoint: the run redoes them. No fsync per
                # batch; a commit that changes the status stays durable.
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            return CONTINUE

    def release(self, task_id: int, token: str) -> bool:
        """Hand a held task back (worker shutting down); True if it is QUEUED again."""
        with self.tx() as conn:
            status = conn.execute(
                select(T.c.status).where(T.c.id == task_id, T.c.run_token == token)
            ).scalar()
            if status == S.PROCESSING:
                return self._set_status(conn, task_id, status, S.QUEUED)
            if status == S.PAUSING:
                self._set_status(conn, task_id, status, S.PAUSED)
        return False

    def fail(self, task_id: int, token: str, message: str) -> bool:
        """Mark a held task FAILED with the error that stopped it; False if not held."""
        stmt = (
            update(T)
            .where(T.c.id == task_id, T.c.run_token == token, T.c.status.in_(S.RUNNING))
            .values(
                status=S.FAILED,
                error=message[:2000],
                run_token=None,
                updated_at=self.now,
                finished_at=self.now,
            )
        )
        with self.tx() as conn:
            return conn.execute(stmt).rowcount == 1

    # -- rollback ------------------------------------------------------------------

    def claim_rollback(self, task_id: int):
        """Take a TERMINATING task nobody holds; return (token, task row) or None."""
        token = uuid.uuid4().hex
        stmt = (
            update(T)
            .where(T.c.id == task_id, T.c.status == S.TERMINATING, T.c.run_token.is_(None))
            .values(run_token=token, heartbeat_at=self.now)
            .returning(*T.c)
        )
        with self.tx() as conn:
            row = conn.execute(stmt).first()
        return (token, row) if row else None

    def delete_rows(self, task_id: int, token: str, upto: int, tables) -> bool:
        """Delete the task's rows in row-number ranges; False if the token was lost."""
        step = ROLLBACK_STEP.get(self.dialect, 50_000)
        for lo in range(0, upto, step):
            with self.tx() as conn:
                if not self._touch(conn, task_id, token):
                    return False
                if self.dialect == "postgresql":
                    # No WAL flush to wait for between ranges: a range lost in a
                    # crash is deleted again (the task stays TERMINATING until
                    # finish_rollback, which is durable).
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                for table in tables:
                    conn.execute(
                        delete(table).where(
                            table.c.task_id == task_id,
                            table.c.row_number > lo,
                            table.c.row_number <= lo + step,
                        )
                    )
        return True

    def finish_rollback(self, task_id: int, token: str) -> bool:
        """Mark a rolled-back task REVOKED (its rows are gone)."""
        with self.tx() as conn:
            if not self._touch(conn, task_id, token):
                return False
            return self._set_status(conn, task_id, S.TERMINATING, S.REVOKED, run_token=None)

    def _touch(self, conn, task_id: int, token: str) -> bool:
        stmt = (
            update(T).where(T.c.id == task_id, T.c.run_token == token).values(heartbeat_at=self.now)
        )
        return conn.execute(stmt).rowcount == 1

    def wal_checkpoint(self) -> None:
        """SQLite: copy the WAL into the database off the writers' path (PASSIVE)."""
        if self.dialect == "sqlite":
            raw = self.reader.raw_connection()  # no BEGIN: a checkpoint runs outside one
            try:
                raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                raw.close()

    def unheld_terminations(self) -> list[int]:
        """Ids of TERMINATING tasks that no run holds."""
        stmt = select(T.c.id).where(T.c.status == S.TERMINATING, T.c.run_token.is_(None))
        with self.reader.connect() as conn:
            return list(conn.execute(stmt).scalars())

    # -- crash recovery ------------------------------------------------------------

    def sweep(self, timeout: float) -> list[int]:
        """Take back tasks whose holder went silent; return ids to enqueue again."""
        stale = T.c.heartbeat_at < self.now - timeout
        ring: list[int] = []
        with self.tx() as conn:
            # Queued but nobody took it (a lost message): ring again.
            ring += conn.execute(
                update(T)
                .where(T.c.status == S.QUEUED, stale)
                .values(heartbeat_at=self.now)
                .returning(T.c.id)
            ).scalars()
            # A run that stopped checkpointing: back to the queue.
            ring += conn.execute(
                update(T)
                .where(T.c.status == S.PROCESSING, stale)
                .values(status=S.QUEUED, run_token=None, heartbeat_at=self.now)
                .returning(T.c.id)
            ).scalars()
            # A pause nobody will obey: the checkpoint is already committed.
            for task_id in (
                conn.execute(select(T.c.id).where(T.c.status == S.PAUSING, stale)).scalars().all()
            ):
                self._set_status(conn, task_id, S.PAUSING, S.PAUSED)
            # A rollback whose runner died: free it for the next one.
            conn.execute(
                update(T)
                .where(T.c.status == S.TERMINATING, T.c.run_token.is_not(None), stale)
                .values(run_token=None, heartbeat_at=self.now)
            )
        return ring
