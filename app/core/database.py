"""The database, per dialect: engine settings, the clock, and the bulk writes.

The hot path writes with the DBAPI (json_each on SQLite, COPY on
PostgreSQL), not ORM objects; rows are JSON arrays, the header is on the task.
"""

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, event, insert
from sqlalchemy.exc import DBAPIError

from app.core.models import TaskError

E = TaskError.__table__


def iso(epoch: float | None) -> datetime | None:
    """An epoch time (the database's clock) as an aware UTC datetime, for the API."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


# Epoch seconds on the database's clock: every worker and web process agree on it.
NOW_SQL = {
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
    "postgresql": "(extract(epoch from clock_timestamp())::float8)",
}


def configure_engine(engine: Engine) -> None:
    """SQLite: WAL, a busy timeout, and BEGIN IMMEDIATE for the store's writes."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (pysqlite recipe)
        cur = dbapi_conn.cursor()
        # A new database only (then fixed: WAL keeps it): 16 KB pages, where a
        # batch's rows take a quarter of the page splits of 4 KB ones. Inserting
        # 1,000,000 rows in 10,000-row transactions: 1.07-1.19 s of CPU against
        # 1.44-1.53 s. Before journal_mode, which writes the file's first page.
        cur.execute(f"PRAGMA page_size={PAGE_SIZE}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={int(LOCK_WAIT_S * 1000)}")
        # Workers checkpoint the WAL in the background (Store.checkpoint); this
        # is only the backstop that keeps the WAL bounded if they do not.
        cur.execute("PRAGMA wal_autocheckpoint=20000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        immediate = conn.get_execution_options().get("sqlite_immediate")
        if not (immediate and begin_immediate(conn.connection.dbapi_connection)):
            # Reads; or a write that waited LOCK_WAIT_S already: SQLite's busy
            # handler then waits as long again, and its error is SQLAlchemy's.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


PAGE_SIZE = 16384  # SQLite's page size for a database it creates

# How long a write waits for SQLite's one write lock, and how often it asks.
LOCK_WAIT_S, LOCK_POLL_S = 60.0, 0.0005


def begin_immediate(dbapi_conn) -> bool:
    """BEGIN IMMEDIATE, asking for the write lock every half millisecond; False if
    it did not begin (any error but SQLITE_BUSY, or LOCK_WAIT_S gone by).

    SQLite's own busy handler sleeps 1, 2, 5, ... then 100 ms between tries, and a
    running import frees the lock only for the instants between its batches: a
    pause (or any write) made then missed them for up to a second. Asking every
    0.5 ms finds one of those instants within a few ms; the busy timeout is off
    only for the BEGIN, which is the one statement that waits for the lock.
    """
    deadline = time.monotonic() + LOCK_WAIT_S
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return True
            except sqlite3.Error as exc:
                busy = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline:
                    return False
            time.sleep(LOCK_POLL_S)
    finally:
        dbapi_conn.execute(f"PRAGMA busy_timeout={int(LOCK_WAIT_S * 1000)}")


def row_writer(
    dialect: str, task_id: int, rows: list | bytes, errors: list, first_row: int = 0
) -> Callable:
    """Return write(conn) inserting rows and row errors.

    `rows` are (row_number, data) pairs; or, as bytes, a block the reader made
    (importer.read_batches): on PostgreSQL a binary COPY, on SQLite one JSON array
    of the rows, numbered from `first_row` on, which json_each turns into rows in
    SQLite's own C (each `value` is the element's JSON text as written: orjson's,
    byte for byte): no Python call per row.
    """
    task_id = int(task_id)

    def write(conn) -> None:
        if rows:
            if dialect == "postgresql":
                _copy_rows(conn, task_id, rows)
            elif isinstance(rows, bytes):
                conn.exec_driver_sql(
                    "INSERT INTO csv_entries (task_id, row_number, data)"
                    f" SELECT {task_id}, ? + key, value FROM json_each(?)",
                    (int(first_row), rows.decode()),
                )
            else:
                conn.exec_driver_sql(
                    f"INSERT INTO csv_entries (task_id, row_number, data) VALUES ({task_id}, ?, ?)",
                    rows,
                )
        if errors:
            conn.execute(
                insert(E),
                [
                    {
                        "task_id": task_id,
                        "row_number": e.row_number,
                        "line_number": e.line_number,
                        "raw": e.raw,
                        "reason": e.reason,
                    }
                    for e in errors
                ],
            )

    return write


def _copy_rows(conn, task_id: int, rows: list | bytes) -> None:
    """COPY on PostgreSQL, its errors raised as SQLAlchemy's (IntegrityError...)."""
    sql = "COPY csv_entries (task_id, row_number, data) FROM STDIN"
    dbapi_error = conn.dialect.loaded_dbapi.Error
    if isinstance(rows, bytes):
        block, sql = rows, sql + " (FORMAT BINARY)"
    else:
        # COPY's text format, built in one pass: orjson escapes every control
        # character, so a backslash is the only byte COPY needs escaped.
        block = "".join(
            f"{task_id}\t{number}\t{data.replace(chr(92), chr(92) * 2)}\n" for number, data in rows
        ).encode()
    try:
        with conn.connection.driver_connection.cursor() as cur, cur.copy(sql) as copy:
            copy.write(block)
    except dbapi_error as exc:
        raise DBAPIError.instance(sql, None, exc, dbapi_error) from exc
