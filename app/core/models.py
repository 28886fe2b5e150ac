"""Tables: the tasks row is the single source of truth for every task."""

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Names for constraints so migrations are stable across databases.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit on PostgreSQL, the rowid alias on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


db = SQLAlchemy(model_class=Base)


class Task(db.Model):
    """One long-running task; times are epoch seconds on the database's clock."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    filename: Mapped[str | None] = mapped_column(String(255))
    upload_path: Mapped[str | None] = mapped_column(String(1024))
    # Import options and the header (JSON array); export filters.
    options: Mapped[str] = mapped_column(Text, default="{}")
    header: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    # Checkpoint: rows consumed, byte offset of the next record, its line number.
    last_row: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_imported: Mapped[int] = mapped_column(BigInteger, default=0)
    # Once REVOKED: the rows its rollback removed (rows_imported is then 0).
    rows_rolled_back: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    error_count: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    line_number: Mapped[int] = mapped_column(BigInteger, default=1)
    # Export: rows matched, and how far it has read (a position along its sources' rows).
    rows_total: Mapped[int | None] = mapped_column(BigInteger)
    cursor: Mapped[int | None] = mapped_column(BigInteger)
    max_errors: Mapped[int] = mapped_column(BigInteger, default=1000)
    error: Mapped[str | None] = mapped_column(Text)
    # When the last pause / resume / terminate was accepted (pause latency = paused_at - this).
    requested_at: Mapped[float | None] = mapped_column(Float)
    # A kind's own counters (a JSON object), set with its checkpoints (Step.checkpoint).
    stats: Mapped[str | None] = mapped_column(Text)
    # Fencing: the run holding the task, and when it last checkpointed.
    run_token: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    run_started_at: Mapped[float | None] = mapped_column(Float)
    run_start_row: Mapped[int] = mapped_column(BigInteger, default=0)
    run_start_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # Who created it (the remote address): MAX_ACTIVE_TASKS_PER_CLIENT counts by it.
    client: Mapped[str | None] = mapped_column(String(64), index=True)


class CsvEntry(db.Model):
    """One imported row, stored as a JSON array; the header lives on the task.

    Keyed by (task_id, row_number) and nothing else: a surrogate id would cost a
    second index on every copied row (on PostgreSQL, COPY into this table took
    2.9 s with one against 2.1 s without, for 1,000,000 rows). On SQLite the table
    is WITHOUT ROWID: a task's rows lie together in key order.
    """

    __tablename__ = "csv_entries"
    __table_args__ = {"sqlite_with_rowid": False}

    # No foreign key: PostgreSQL would check it on every copied row (it halves
    # COPY speed), and a task's rows are only ever deleted by its own rollback.
    task_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    row_number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    data: Mapped[str] = mapped_column(Text)


class PausedTask(db.Model):
    """Snapshot written in the same transaction that sets PAUSED."""

    __tablename__ = "paused_tasks"

    task_id: Mapped[int] = mapped_column(Integer, ForeignKey("tasks.id"), primary_key=True)
    last_row: Mapped[int] = mapped_column(BigInteger)
    paused_at: Mapped[float] = mapped_column(Float)


class TaskError(db.Model):
    """A row that could not be imported."""

    __tablename__ = "task_errors"
    __table_args__ = (Index("ix_task_errors_task_row", "task_id", "row_number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_id: Mapped[int] = mapped_column(Integer, ForeignKey("tasks.id"))
    row_number: Mapped[int] = mapped_column(BigInteger)
    line_number: Mapped[int] = mapped_column(BigInteger)
    raw: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
