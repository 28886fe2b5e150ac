"""Test helpers: polling with deadlines, processes, files and SQL checks."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

ROOT = Path(__file__).resolve().parent.parent
FINAL = ("COMPLETED", "FAILED", "REVOKED")
REQUIRED = os.environ.get("CI") == "true"
RUNNING_SERVERS: dict = {}  # base URL -> Proc of each live server, for crash tests


def need(what: str, ok: bool, why: str) -> None:
    """Skip (or fail under CI=true) when something a test needs is missing."""
    import pytest

    if ok:
        return
    if REQUIRED:
        pytest.fail(f"{what} is required under CI=true: {why}")
    pytest.skip(f"{what} not available: {why}")


def _pg_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@contextmanager
def stack_env(kind: str, data_dir: Path):
    """Environment for the app and its workers on one stack: DATA_DIR, database, broker.

    "sqlite": SQLite + the embedded filesystem broker (as `make run`). "postgres":
    a fresh schema in DATABASE_URL + REDIS_URL (as a scaled deployment); without
    them the caller skips (fails under CI=true). "s3": "postgres" with uploads and
    exports in a fresh bucket of moto's S3 server (tests/s3.py).
    """
    env = {"DATA_DIR": str(data_dir), "HEARTBEAT_TIMEOUT_S": "30"}
    if kind == "s3":  # the postgres stack with uploads and exports in a bucket
        from tests.s3 import bucket_env

        with stack_env("postgres", data_dir) as env, bucket_env() as storage:
            yield {**env, **storage}
        return
    if kind == "sqlite":
        yield {**env, "DATABASE_URL": "", "REDIS_URL": ""}
        return
    import redis as redis_lib
    from sqlalchemy import create_engine

    db_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    need("PostgreSQL", bool(db_url), "set DATABASE_URL=postgresql+psycopg://...")
    need("Redis", bool(redis_url), "set REDIS_URL=redis://...")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(db_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    queue_db = redis_lib.Redis.from_url(redis_url)
    # Each test gets its own queue name space: a fresh Redis database is not
    # available per test, so flush the one we use (tests run one at a time).
    queue_db.flushdb()
    try:
        yield {**env, "DATABASE_URL": _pg_schema_url(db_url, schema), "REDIS_URL": redis_url}
    finally:
        queue_db.flushdb()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until it returns a truthy value; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    popen: subprocess.Popen
    log: Path
    out: object = None

    @classmethod
    def start(cls, argv: list[str], env: dict, log: Path) -> "Proc":
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        for key in [k for k, v in full_env.items() if v == ""]:
            del full_env[key]  # "" means unset
        out = open(log, "ab")  # noqa: SIM115  (owned by the process for its life)
        popen = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return cls(popen, log, out)

    def log_contains(self, text_: str) -> bool:
        return text_ in self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def kill_group(self) -> None:
        """SIGKILL the process and its children (a crash: nothing gets to clean up)."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=30)
        if self.out is not None:
            self.out.close()

    def stop(self, timeout: float = 60) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill_group()
        return self.popen.returncode


def write_rows(path: Path, rows: int, seed: int = 0) -> Path:
    from sample_data.generate import write_csv

    write_csv(str(path), rows, seed=seed)
    return path


def upload(client, path: Path, **form):
    """POST a file to / through the test client, streaming it from disk."""
    from werkzeug.datastructures import FileStorage
    from werkzeug.test import stream_encode_multipart

    with open(path, "rb") as f:
        file = FileStorage(stream=f, filename=path.name, content_type="text/csv")
        data = {"file": file, **{k: str(v) for k, v in form.items()}}
        # Encoded here so the spooled body is closed (the test client leaves it open).
        body, length, boundary = stream_encode_multipart(data)
        with body:
            return client.post(
                "/",
                input_stream=body,
                content_length=length,
                content_type=f"multipart/form-data; boundary={boundary}",
            )


def task(client, task_id) -> dict:
    response = client.get(f"/tasks/{task_id}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def wait_status(client, task_id, statuses, timeout: float = 120) -> dict:
    statuses = (statuses,) if isinstance(statuses, str) else tuple(statuses)

    def check():
        t = task(client, task_id)
        if t["status"] in statuses:
            return t
        if t["status"] in FINAL and t["status"] not in statuses:
            raise AssertionError(f"task {task_id} ended {t['status']}: {t['error']}")
        return None

    return wait_for(check, timeout, f"task {task_id} to reach {statuses}")


def wait_rows(client, task_id, at_least: int, timeout: float = 120) -> dict:
    return wait_for(
        lambda: (t := task(client, task_id))["last_row"] >= at_least and t,
        timeout,
        f"task {task_id} to pass row {at_least}",
        interval=0.01,
    )


def row_stats(engine, task_id) -> tuple[int, int, int | None, int | None]:
    """(count, distinct row numbers, min, max) of a task's rows, straight from SQL."""
    with engine.connect() as conn:
        return tuple(
            conn.execute(
                text(
                    "SELECT count(*), count(DISTINCT row_number), min(row_number), "
                    "max(row_number) FROM csv_entries WHERE task_id = :t"
                ),
                {"t": task_id},
            ).one()
        )


def assert_exact(engine, task_id, n: int) -> None:
    expected = (n, n, 1, n) if n else (0, 0, None, None)
    assert row_stats(engine, task_id) == expected


def task_lock_free(stack: dict, engine, tid: int) -> bool:
    """True if no transaction holds the task's row (PostgreSQL) or the write lock (SQLite)."""
    if not stack.get("DATABASE_URL"):
        conn = sqlite3.connect(Path(stack["DATA_DIR"]) / "app.db", timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '100ms'"))
            conn.execute(text("SELECT id FROM tasks WHERE id = :t FOR UPDATE"), {"t": tid})
        return True
    except OperationalError:
        return False


def freeze(proc, stack, engine, tid) -> None:
    """SIGSTOP the worker's whole process group at an instant it holds no lock.

    Frozen inside a transaction it would block every other writer; so if the
    lock is held, thaw it and try again a moment later.
    """

    def attempt():
        os.killpg(proc.popen.pid, signal.SIGSTOP)
        if task_lock_free(stack, engine, tid):
            return True
        os.killpg(proc.popen.pid, signal.SIGCONT)
        return False

    wait_for(attempt, 30, "the worker frozen outside a transaction", interval=0.03)


def thaw(proc) -> None:
    try:
        os.killpg(proc.popen.pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
