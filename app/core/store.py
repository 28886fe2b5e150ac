"""Task state in the database: transitions, claims, fenced checkpoints, rollback.

Knows nothing of HTTP or Celery. Every status change is one conditional
UPDATE; every checkpoint commit is fenced by the run token.
"""

import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine, delete, func, insert, literal_column, select, update

from app.core import queries
from app.core import states as S
from app.core.database import NOW_SQL, row_writer
from app.core.models import PausedTask, Task, TaskError
from app.core.states import Outcome

T = Task.__table__
P = PausedTask.__table__
E = TaskError.__table__

# Rows deleted per rollback transaction. SQLite's transaction holds the one write
# lock (other imports wait: ~60 ms at 50,000 rows); PostgreSQL's locks only the
# task's own rows, and fewer, larger ranges there cost less in all (1,000,000 rows
# in one range: 0.61-0.65 s; in four: 0.70-0.76 s; one DELETE by task: 0.60-1.15 s).
ROLLBACK_STEP = {"sqlite": 50_000, "postgresql": 1_000_000}


def _held(task_id: int, token: str) -> tuple:
    """WHERE clauses: this task, still held by the run (or rollback) with `token`."""
    return T.c.id == task_id, T.c.run_token == token


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

    def row_writer(
        self, task_id: int, rows: list | bytes, errors: list, first_row: int = 0
    ) -> Callable:
        """write(conn) inserting a batch's rows and row errors (see database.row_writer)."""
        return row_writer(self.dialect, task_id, rows, errors, first_row)

    @contextmanager
    def read(self):
        """A connection for reads (no write lock): what the API reads through."""
        with self.reader.connect() as conn:
            yield conn

    def get(self, task_id: int):
        """The task row (with `paused_at`), or None."""
        with self.read() as conn:
            return queries.get_task(conn, task_id)

    def status(self, task_id: int) -> str | None:
        """The task's status, or None (a read that takes no lock)."""
        with self.reader.connect() as conn:
            return conn.execute(select(T.c.status).where(T.c.id == task_id)).scalar()

    # -- creation and user actions -------------------------------------------------

    def create_task(self, **values) -> int:
        """Insert a QUEUED task and return its id."""
        now, (_, queued) = self.now, S.check("create")
        stmt = insert(T).values(
            status=queued, created_at=now, updated_at=now, heartbeat_at=now, **values
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
                event = S.action_event(action, status)
                if event is None:
                    return status, False
                where = T.c.id == task_id
                if self._move(conn, event, where, frm=(status,), requested_at=self.now):
                    return S.EVENTS[event].to, True
        raise RuntimeError(f"task {task_id}: too much contention on {action}")

    def _move(self, conn, event: str, *where, frm=None, returning=(T.c.id,), **values) -> list:
        """The one status write: `event` of the state table (states.EVENTS), checked.

        One conditional UPDATE of the tasks in the event's from-statuses (or `frm`,
        a subset of them) that also match `where`; stamps `updated_at` and what
        the new status implies, keeps the paused_tasks snapshot in step, and
        returns the changed rows (`returning`, which must include the id).
        """
        frm, to = S.check(event, frm)
        values = {"status": to, "updated_at": self.now, **values}
        if to not in S.RUNNING:
            values.setdefault("run_token", None)  # no run holds it any more
        if to in (S.PAUSED, S.TERMINATING, S.QUEUED):
            values.setdefault("heartbeat_at", self.now)  # the sweep's clock starts again
        if to in (S.COMPLETED, S.FAILED, S.REVOKED):
            values["finished_at"] = self.now
        leaving = T.c.status == frm[0] if len(frm) == 1 else T.c.status.in_(frm)
        stmt = update(T).where(leaving, *where).values(**values).returning(*returning)
        rows = conn.execute(stmt).all()
        ids = [r.id for r in rows]
        if ids and to == S.PAUSED:
            conn.execute(
                insert(P).from_select(
                    ["task_id", "last_row", "paused_at"],
                    # updated_at, not the clock again: paused_at is the same instant.
                    select(T.c.id, T.c.last_row, T.c.updated_at).where(T.c.id.in_(ids)),
                )
            )
        elif ids and S.PAUSED in frm:  # only a PAUSED task has a snapshot
            conn.execute(delete(P).where(P.c.task_id.in_(ids)))
        return rows

    # -- runs ----------------------------------------------------------------------

    def claim(self, task_id: int):
        """Take a QUEUED task for a new run; return (token, task row) or None."""
        token = uuid.uuid4().hex
        now = self.now
        with self.tx() as conn:
            rows = self._move(
                conn,
                "claim",
                T.c.id == task_id,
                returning=tuple(T.c),
                run_token=token,
                heartbeat_at=now,
                started_at=func.coalesce(T.c.started_at, now),
                run_started_at=now,
                run_start_row=T.c.last_row,
                run_start_bytes=T.c.bytes_done,
            )
        return (token, rows[0]) if rows else None

    def commit(self, task_id: int, token: str, step: Step) -> Outcome:
        """Write a batch and its checkpoint in one transaction, fenced by the token.

        Returns what the run must do next: Outcome.CONTINUE, or PAUSED / COMPLETED
        / FAILED (the task has stopped), or LOST (terminated or taken over).

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
                held = _held(task_id, token)
                return Outcome.PAUSED if self._move(conn, "obey_pause", *held) else Outcome.LOST
            if step.write is not None:
                step.write(conn)
            if row.error_count > row.max_errors:
                errors = "1 row error" if row.error_count == 1 else f"{row.error_count} row errors"
                error = f"{errors} passed max_errors={row.max_errors}"
                self._move(conn, "too_many_errors", *_held(task_id, token), error=error)
                return Outcome.FAILED
            if step.done:
                self._move(conn, "complete", *_held(task_id, token))
                return Outcome.COMPLETED
            if self.dialect == "postgresql":
                # A crash of the server may lose the last few batches, but only
                # whole, with their checkpoint: the run redoes them. No fsync per
                # batch; a commit that changes the status stays durable.
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            return Outcome.CONTINUE

    def release(self, task_id: int, token: str) -> bool:
        """Hand a held task back (worker shutting down); True if it is QUEUED again."""
        held = _held(task_id, token)
        with self.tx() as conn:
            if self._move(conn, "release", *held):
                return True
            self._move(conn, "release_pausing", *held)  # a pause was asked: obey it
        return False

    def fail(self, task_id: int, token: str, message: str) -> bool:
        """Mark a held task FAILED with the error that stopped it; False if not held."""
        held = _held(task_id, token)
        with self.tx() as conn:
            return bool(self._move(conn, "fail", *held, error=message[:2000]))

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
        held = _held(task_id, token)
        with self.tx() as conn:
            rows = self._move(
                conn,
                "revoke",
                *held,
                rows_rolled_back=T.c.rows_imported,  # what it held: all gone now
                rows_imported=0,
            )
            return bool(rows)

    def _touch(self, conn, task_id: int, token: str) -> bool:
        stmt = update(T).where(*_held(task_id, token)).values(heartbeat_at=self.now)
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
            ring += [r.id for r in self._move(conn, "requeue_stale", stale)]
            # A pause nobody will obey: the checkpoint is already committed.
            self._move(conn, "pause_unheld", stale)
            # A rollback whose runner died: free it for the next one.
            conn.execute(
                update(T)
                .where(T.c.status == S.TERMINATING, T.c.run_token.is_not(None), stale)
                .values(run_token=None, heartbeat_at=self.now)
            )
        return ring
