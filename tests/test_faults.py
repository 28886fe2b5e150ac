"""The fault matrix: workers, web server, database and disk failing at the worst moment.

Every import still ends with exactly its rows (counted and told apart with SQL),
and the task reaches its goal without anyone stepping in. Real processes
throughout; waits poll with deadlines. To make "a pause is pending while the
worker dies" exact rather than lucky, the worker's process group is frozen
(SIGSTOP) at an instant it holds no database lock, the user acts, and only then
does the fault strike.
"""

import os
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tests.helpers import (
    REQUIRED,
    RUNNING_SERVERS,
    assert_exact,
    freeze,
    task,
    thaw,
    upload,
    wait_for,
    wait_rows,
    wait_status,
    write_rows,
)
from tests.s3 import stored

N = 10_000
RATE = 4_000  # rows/s: batches of 200 rows every 50 ms; N takes 2.5 s
FAST_TAKEOVER = {"HEARTBEAT_TIMEOUT_S": 2}


@pytest.fixture
def csv10k(tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "faults10k.csv"
    if not path.exists():
        write_rows(path, N, seed=11)
    return path


# -- process and lock helpers ----------------------------------------------------------


def children(pid: int) -> list[int]:
    """Direct children of a process."""
    return [c.pid for c in psutil.Process(pid).children()]


def process_tree(pid: int) -> list[int]:
    """A process and every process below it (a server: gunicorn, its workers, the worker)."""
    return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]


def holders_of(path: str) -> list[int]:
    """Processes with `path` open."""
    pids = []
    for proc in psutil.process_iter():
        try:
            if any(f.path == path for f in proc.open_files()):
                pids.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return pids


# -- worker deaths with an action pending -------------------------------------------------


@pytest.mark.s3
@pytest.mark.parametrize("victim", ["worker", "pool child"])
def test_worker_killed_while_a_pause_is_pending(
    client, engine, stack, start_worker, csv10k, victim
):
    worker = start_worker(concurrency=1, IMPORT_MAX_ROWS_PER_S=RATE, **FAST_TAKEOVER)
    tid = upload(client, csv10k).get_json()["id"]
    wait_rows(client, tid, 1_000)
    freeze(worker, stack, engine, tid)
    assert client.post(f"/pause/{tid}").status_code == 202
    assert task(client, tid)["status"] == "PAUSING"  # nobody will reach a checkpoint
    if victim == "worker":
        worker.kill_group()  # SIGKILL: the worker and its pool are gone
        start_worker(concurrency=1, **FAST_TAKEOVER)  # its sweeper finishes the pause
    else:
        (child,) = children(worker.popen.pid)
        os.kill(child, signal.SIGKILL)  # the run dies; the worker's main process lives on
        thaw(worker)
    paused = wait_status(client, tid, "PAUSED", timeout=30)
    assert 1_000 <= paused["rows_imported"] == paused["last_row"] < N
    assert_exact(engine, tid, paused["rows_imported"])
    assert client.post(f"/resume/{tid}").status_code == 202
    done = wait_status(client, tid, "COMPLETED", timeout=60)
    assert done["rows_imported"] == N
    assert_exact(engine, tid, N)


@pytest.mark.s3
@pytest.mark.parametrize("when", ["before its rollback", "mid rollback"])
def test_worker_killed_while_a_terminate_is_pending(
    app, client, engine, stack, start_worker, csv10k, when
):
    worker = start_worker(concurrency=1, IMPORT_MAX_ROWS_PER_S=RATE, **FAST_TAKEOVER)
    tid = upload(client, csv10k).get_json()["id"]
    wait_rows(client, tid, 2_000)
    freeze(worker, stack, engine, tid)  # neither the run nor the rollback loop moves
    assert client.post(f"/terminate/{tid}").status_code == 202
    worker.kill_group()
    store = app.extensions["store"]
    if when == "mid rollback":
        # A rollback takes the task, deletes part of its rows, and its worker dies.
        token, _ = store.claim_rollback(tid)
        with store.tx() as conn:
            conn.execute(
                text("DELETE FROM csv_entries WHERE task_id = :t AND row_number <= 500"),
                {"t": tid},
            )
        assert store.get(tid).run_token == token
    assert task(client, tid)["status"] == "TERMINATING"
    start_worker(concurrency=1, **FAST_TAKEOVER)
    revoked = wait_status(client, tid, "REVOKED", timeout=30)
    assert revoked["finished_at"]
    assert_exact(engine, tid, 0)
    assert client.get(f"/tasks/{tid}/errors").get_json()["errors"] == []
    with engine.connect() as conn:
        path = conn.execute(text("SELECT upload_path FROM tasks WHERE id=:t"), {"t": tid}).scalar()
    assert not stored(path)


def test_sigterm_while_a_pause_is_pending(client, engine, stack, start_worker, csv10k):
    """Shutdown and pause at the same checkpoint: the run obeys the pause and exits."""
    worker = start_worker(concurrency=1, IMPORT_MAX_ROWS_PER_S=RATE)  # no fast takeover
    tid = upload(client, csv10k).get_json()["id"]
    wait_rows(client, tid, 1_000)
    freeze(worker, stack, engine, tid)
    assert client.post(f"/pause/{tid}").status_code == 202
    worker.signal(signal.SIGTERM)  # delivered on thaw, with the pause pending
    thaw(worker)
    wait_for(lambda: worker.popen.poll() is not None, 60, "the worker to exit")
    paused = task(client, tid)
    assert paused["status"] == "PAUSED"  # by the run itself: no sweeper was left to do it
    assert_exact(engine, tid, paused["rows_imported"])
    assert not worker.log_contains("WorkerLostError")
    start_worker()
    assert client.post(f"/resume/{tid}").status_code == 202
    wait_status(client, tid, "COMPLETED", timeout=60)
    assert_exact(engine, tid, N)


# -- duplicate deliveries -----------------------------------------------------------------


@pytest.mark.s3
def test_the_same_task_delivered_twice_at_once(app, client, engine, stack, start_worker, csv10k):
    """Two workers (two slots each) get the same task three times at once, at start and
    at resume, and once more after it completed: one run at a time, each row once."""
    from app.core.dispatch import run_task

    workers = [start_worker(concurrency=2, IMPORT_MAX_ROWS_PER_S=RATE) for _ in range(2)]
    tid = upload(client, csv10k).get_json()["id"]  # delivery 1
    run_task.apply_async((tid,))
    run_task.apply_async((tid,))
    wait_rows(client, tid, 2_000)
    assert client.post(f"/pause/{tid}").status_code == 202
    wait_status(client, tid, "PAUSED")
    assert client.post(f"/resume/{tid}").status_code == 202
    run_task.apply_async((tid,))
    run_task.apply_async((tid,))
    wait_status(client, tid, "COMPLETED", timeout=60)
    run_task.apply_async((tid,))  # a late redelivery
    assert_exact(engine, tid, N)

    def refusals():
        return sum(len(re.findall("'not claimed'", w.log.read_text())) for w in workers)

    wait_for(lambda: refusals() >= 5, 30, "every duplicate to be refused")
    assert task(client, tid)["status"] == "COMPLETED"
    assert_exact(engine, tid, N)


# -- the database ---------------------------------------------------------------------------


def test_database_locked_by_another_writer_for_seconds(client, engine, stack, start_worker, csv10k):
    start_worker(concurrency=1, IMPORT_MAX_ROWS_PER_S=RATE)
    tid = upload(client, csv10k).get_json()["id"]
    wait_rows(client, tid, 1_000)
    if stack.get("DATABASE_URL"):
        conn = engine.connect()
        tx = conn.begin()
        conn.execute(text("SELECT id FROM tasks WHERE id = :t FOR UPDATE"), {"t": tid})
        conn.execute(text("LOCK TABLE csv_entries IN EXCLUSIVE MODE"))
    else:
        conn = sqlite3.connect(Path(stack["DATA_DIR"]) / "app.db", isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
    try:
        held = task(client, tid)  # readers still read
        time.sleep(3)  # the deliberate hold: the worker waits on the lock
        assert task(client, tid)["last_row"] == held["last_row"]  # nothing slipped past
    finally:
        if stack.get("DATABASE_URL"):
            tx.commit()
        else:
            conn.execute("COMMIT")
        conn.close()
    done = wait_status(client, tid, "COMPLETED", timeout=60)  # never FAILED
    assert done["rows_imported"] == N and done["error"] is None
    assert_exact(engine, tid, N)


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_database_connections_dropped_mid_import(client, engine, stack, start_worker, csv10k):
    """pg_terminate_backend on every connection of the worker, three times: each commit
    that meets a dead connection is retried, and nothing is written twice."""
    name = f"faults_{os.getpid()}_{time.monotonic_ns()}"  # only this test's worker
    worker = start_worker(
        concurrency=1,
        IMPORT_MAX_ROWS_PER_S=RATE,
        DATABASE_URL=f"{stack['DATABASE_URL']}&application_name={name}",
    )
    tid = upload(client, csv10k).get_json()["id"]
    mark, dropped = 500, 0
    for _ in range(3):
        mark = wait_rows(client, tid, mark + 500)["last_row"]
        with engine.connect() as conn:
            dropped += conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            ).scalar()
    assert dropped >= 3
    done = wait_status(client, tid, "COMPLETED", timeout=60)
    assert done["rows_imported"] == N and done["error"] is None
    assert_exact(engine, tid, N)
    # The dead links were met and survived: by a commit (retried) or by the run's look
    # at its task's status between batches (asked again at the next tick).
    assert worker.log_contains("transient database error, retrying") or worker.log_contains(
        "could not read its status"
    )


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_a_dropped_link_on_the_last_empty_commit_still_completes(app, client, tmp_path):
    """The file ends exactly at a batch boundary, so the last step is empty (done, no
    rows, the same checkpoint as the step before). Its commit fails before it lands."""
    from app.core import runner
    from app.core.states import Outcome

    rows = 300
    tid = upload(client, write_rows(tmp_path / "r.csv", rows)).get_json()["id"]
    store = app.extensions["store"]
    real, dropped = store.commit, []

    def drop_on_last(task_id, token, step):
        if step.done and not dropped:
            dropped.append(step)
            raise OperationalError("COMMIT", {}, Exception("server closed the connection"))
        return real(task_id, token, step)

    config = {**app.config, "IMPORT_BATCH_SIZE": 100, "IMPORT_BATCH_SECONDS": 60.0}
    with app.app_context():
        store.commit = drop_on_last
        try:
            outcome = runner.run(store, tid, config, enqueue=lambda _: None)
        finally:
            del store.commit
    assert dropped and dropped[0].rows == 0
    assert (outcome, store.get(tid).status) == (Outcome.COMPLETED, "COMPLETED")


# -- the disk and the web server ------------------------------------------------------------


@pytest.fixture
def tiny_disk(request, tmp_path):
    """(DATA_DIR, how): a DATA_DIR with about 8 MB of room, and how that was made.

    "tmpfs": a small tmpfs mounted there (ENOSPC). "rlimit": RLIMIT_FSIZE of 8 MB on
    the server's processes (EFBIG), also the stand-in where mounting is not allowed.
    """
    data = tmp_path / "tiny"
    data.mkdir()
    how = request.param
    if how == "tmpfs":
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(data)],
            capture_output=True,
            text=True,
        )
        if mount.returncode != 0:
            if not REQUIRED:
                pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
            how = "rlimit"  # under CI nothing skips: the file size limit instead
    yield data, how
    if how == "tmpfs":
        subprocess.run(["umount", "-l", str(data)], check=False)


def limit_file_size(base: str, limit: int) -> None:
    """RLIMIT_FSIZE on every process of the server at `base` (writes past it: EFBIG)."""
    for pid in process_tree(RUNNING_SERVERS[base].popen.pid):
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("tiny_disk", ["tmpfs", "rlimit"], indirect=True)
def test_upload_bigger_than_the_room_left_is_507_and_leaves_nothing(
    tiny_disk, live_server_factory, tmp_path
):
    data, how = tiny_disk
    base = live_server_factory(DATA_DIR=str(data))
    if how == "rlimit":
        limit_file_size(base, 8 * 1024 * 1024)
    big = tmp_path / "big.csv"
    big.write_bytes(b"a,b\n" + b"1,2\n" * 3_000_000)  # 12 MB
    with open(big, "rb") as f:
        response = requests.post(f"{base}/", files={"file": f}, timeout=120)
    assert response.status_code == 507, response.text
    error = response.json()["error"]
    assert error["code"] == 507 and "storage" in error["message"]
    assert requests.get(f"{base}/tasks", timeout=10).json()["tasks"] == []
    assert os.listdir(data / "uploads") == []  # nothing half-made
    # The room came back with the part: the next upload goes through.
    small = write_rows(tmp_path / "small.csv", 1_000)
    with open(small, "rb") as f:
        response = requests.post(f"{base}/", files={"file": f}, timeout=60)
    assert response.status_code == 202, response.text
    tid = response.json()["id"]
    wait_for(
        lambda: requests.get(f"{base}/tasks/{tid}", timeout=10).json()["status"] == "COMPLETED",
        60,
        "the small import to complete",
    )


class SlowUpload:
    """A multipart upload sent by hand over a socket, a piece at a time."""

    def __init__(self, base: str, content: bytes, name: str = "slow.csv"):
        host, port = base.removeprefix("http://").split(":")
        boundary = "----faults" + os.urandom(8).hex()
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        self.body = head + content + tail
        request = (
            f"POST / HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        self.sock.sendall(request)
        self.sent = 0

    def send(self, upto: int) -> None:
        self.sock.sendall(self.body[self.sent : upto])
        self.sent = max(self.sent, upto)

    def finish(self) -> tuple[int, str]:
        self.send(len(self.body))
        answer = b""
        while chunk := self.sock.recv(65536):
            answer += chunk
        self.sock.close()
        status = int(answer.split(b" ", 2)[1])
        return status, answer.split(b"\r\n\r\n", 1)[1].decode(errors="replace")

    def close(self) -> None:
        self.sock.close()


def parts(uploads: Path) -> list[Path]:
    return sorted(uploads.glob("*.part"))


def wait_part(uploads: Path, size: int) -> Path:
    return wait_for(
        lambda: next((p for p in parts(uploads) if p.stat().st_size >= size), None),
        30,
        "the upload to be on disk",
    )


@pytest.mark.parametrize("kill", ["its web worker", "the whole server"])
def test_web_server_killed_mid_upload_leaves_no_task_and_no_file(
    live_server_factory, tmp_path, csv10k, kill
):
    data = tmp_path / "web"
    env = {"DATA_DIR": str(data), "UPLOAD_PART_MAX_AGE_S": "0.5"}
    base = live_server_factory(**env)
    uploads = data / "uploads"
    content = csv10k.read_bytes()  # about 2 MB

    # A live upload that stalls is not an orphan, however old its part looks.
    alive = SlowUpload(base, content, "alive.csv")
    alive.send(len(alive.body) // 2)
    part = wait_part(uploads, 64 * 1024)
    old = time.time() - 3600

    def kept_while_old() -> bool:
        """One cleanup pass saw the live part looking an hour old: was it kept?"""
        os.utime(part, (old, old))
        decoy = uploads / "0123456789abcdef0123456789abcdef.part"  # a dead request's part
        decoy.write_bytes(b"a,b\n")
        os.utime(decoy, (old, old))
        wait_for(lambda: not decoy.exists(), 30, "the control loop to remove a dead part")
        assert part.exists()
        return part.stat().st_mtime < old + 60  # else late bytes landed meanwhile: again

    wait_for(kept_while_old, 60, "a cleanup pass that saw the live part old", interval=0)
    status, body = alive.finish()
    assert status == 202, body
    alive_id = int(re.search(r'"id":\s*(\d+)', body).group(1))
    wait_for(
        lambda: (
            requests.get(f"{base}/tasks/{alive_id}", timeout=10).json()["status"] == "COMPLETED"
        ),
        60,
        "the live upload's import to complete",
    )

    # Now one that dies with the server.
    doomed = SlowUpload(base, content, "doomed.csv")
    doomed.send(len(doomed.body) // 2)
    part = wait_part(uploads, 64 * 1024)
    server = RUNNING_SERVERS[base]
    if kill == "its web worker":
        pids = holders_of(str(part))
        assert pids and server.popen.pid not in pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)  # gunicorn starts another; the server stays up
    else:
        server.kill_group()
        base = live_server_factory(**env)  # back on the same DATA_DIR
    doomed.close()
    wait_for(lambda: not parts(uploads), 30, "the orphan part to be removed")
    tasks = requests.get(f"{base}/tasks", timeout=10).json()["tasks"]
    assert [(t["filename"], t["status"]) for t in tasks] == [("alive.csv", "COMPLETED")]
    assert os.listdir(uploads) == []


def test_orphan_uploads_are_removed_and_needed_ones_kept(app, client, tmp_path):
    """The control loop's cleanup, in one pass: what it removes and what it keeps."""
    import fcntl

    from app.core.control import remove_orphan_uploads

    uploads = Path(app.config["DATA_DIR"]) / "uploads"
    tid = upload(client, write_rows(tmp_path / "q.csv", 10)).get_json()["id"]  # QUEUED
    store = app.extensions["store"]
    queued = Path(store.get(tid).upload_path)
    old = time.time() - 3600

    def make(name: str, age_old: bool = True) -> Path:
        path = uploads / name
        path.write_bytes(b"a\n1\n")
        if age_old:
            os.utime(path, (old, old))
        return path

    dead_part = make("a" * 32 + ".part")
    live_part = make("b" * 32 + ".part")
    fresh_part = make("c" * 32 + ".part", age_old=False)
    orphan_csv = make("d" * 32 + ".csv")  # saved, then the server died before its task
    fresh_csv = make("e" * 32 + ".csv", age_old=False)  # its task is being created now
    os.utime(queued, (old, old))
    holder = open(live_part, "rb")  # noqa: SIM115  (closed below)
    fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live request writes it
    threads_before = set(threading.enumerate())  # others may end meanwhile, none may start
    try:
        with app.app_context():
            remove_orphan_uploads(app, store)
    finally:
        holder.close()
    assert set(threading.enumerate()) <= threads_before
    assert not dead_part.exists() and not orphan_csv.exists()
    assert live_part.exists() and fresh_part.exists() and fresh_csv.exists()
    assert queued.exists()  # a QUEUED task needs its upload
