"""Crashes, stops and lost brokers: every import still ends exact, untouched by hand."""

import shutil
import signal
import subprocess

import pytest
import requests

from tests.helpers import (
    RUNNING_SERVERS,
    assert_exact,
    free_port,
    need,
    task,
    upload,
    wait_for,
    wait_rows,
    wait_status,
    write_rows,
)

pytestmark = pytest.mark.slow  # every test here starts real processes

ROWS = 300_000
SLOW = {"IMPORT_MAX_ROWS_PER_S": "50000", "HEARTBEAT_TIMEOUT_S": "3"}


@pytest.fixture
def csv300k(tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "recovery300k.csv"
    if not path.exists():
        write_rows(path, ROWS, seed=7)
    return path


def test_worker_killed_mid_import_is_taken_over(client, engine, start_worker, csv300k):
    doomed = start_worker(**SLOW)
    tid = upload(client, csv300k).get_json()["id"]
    wait_rows(client, tid, 40_000)
    doomed.kill_group()  # SIGKILL: no checkpoint, no goodbye
    assert task(client, tid)["status"] == "PROCESSING"
    start_worker(**SLOW)  # the sweeper sees the silent heartbeat and requeues
    done = wait_status(client, tid, "COMPLETED")
    assert done["rows_imported"] == ROWS
    assert_exact(engine, tid, ROWS)


def test_worker_sigterm_stops_at_a_checkpoint_and_hands_back(client, engine, start_worker, csv300k):
    worker = start_worker(**SLOW)
    tid = upload(client, csv300k).get_json()["id"]
    wait_rows(client, tid, 40_000)
    worker.signal(signal.SIGTERM)
    wait_for(lambda: worker.popen.poll() is not None, 60, "the worker to exit")
    released = task(client, tid)
    assert released["status"] == "QUEUED" and released["last_row"] < ROWS
    assert_exact(engine, tid, released["rows_imported"])
    assert not worker.log_contains("WorkerLostError")
    start_worker(**SLOW)
    wait_status(client, tid, "COMPLETED")
    assert_exact(engine, tid, ROWS)


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of this test's own, so it can be killed and restarted."""
    exe = shutil.which("redis-server")
    need("redis-server", exe is not None, "install Redis")
    port = free_port()
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(tmp_path)]
    procs = []

    def start():
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)

        def up():
            try:
                import redis

                return redis.Redis(port=port).ping()
            except Exception:
                return False

        wait_for(up, 30, "redis-server to answer")
        return proc

    yield f"redis://127.0.0.1:{port}/0", start
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_redis_killed_and_restarted_mid_import(stack, own_redis, monkeypatch, tmp_path, csv300k):
    url, start_redis = own_redis
    redis_proc = start_redis()
    stack["REDIS_URL"] = url
    monkeypatch.setenv("REDIS_URL", url)
    from app import create_app
    from app.core.migrate import upgrade
    from tests.helpers import Proc

    for key, value in stack.items():
        monkeypatch.setenv(key, value)
    app = create_app({"TESTING": True})
    upgrade(app)
    client = app.test_client()
    worker = Proc.start(
        ["worker.py"], {**stack, "SWEEP_INTERVAL_S": "1", **SLOW}, tmp_path / "w.log"
    )
    try:
        wait_for(lambda: worker.log_contains(" ready."), 60, "worker ready")
        tid = upload(client, csv300k).get_json()["id"]
        mark = wait_rows(client, tid, 20_000)["last_row"]
        redis_proc.kill()
        redis_proc.wait()
        # The broker is only a doorbell: the running import goes on without it.
        wait_rows(client, tid, mark + 20_000)
        start_redis()
        wait_status(client, tid, "COMPLETED")
        later = upload(client, write_rows(tmp_path / "later.csv", 1_000)).get_json()["id"]
        wait_status(client, later, "COMPLETED")  # the worker reconnected
        from app.core.models import db

        with app.app_context():
            assert_exact(db.engine, tid, ROWS)
            assert_exact(db.engine, later, 1_000)
    finally:
        worker.kill_group()


def test_embedded_server_killed_and_restarted(live_server_factory, tmp_path, csv300k):
    data_dir = tmp_path / "shared-data"
    env = {"DATA_DIR": str(data_dir), **SLOW}
    base = live_server_factory(**env)
    with open(csv300k, "rb") as f:
        tid = requests.post(f"{base}/", files={"file": f}, timeout=60).json()["id"]

    def last_row(url):
        return requests.get(f"{url}/tasks/{tid}", timeout=10).json()["last_row"]

    wait_for(lambda: last_row(base) >= 30_000, 60, "the import to be under way")
    server = RUNNING_SERVERS[base]
    server.popen.send_signal(signal.SIGKILL)  # the parent only: its worker must follow
    server.popen.wait()
    base2 = live_server_factory(**env)
    status = wait_for(
        lambda: (
            (t := requests.get(f"{base2}/tasks/{tid}", timeout=10).json())["status"] == "COMPLETED"
            and t
        ),
        120,
        "the import to complete after the restart",
    )
    assert status["rows_imported"] == ROWS
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{data_dir / 'app.db'}")
    assert_exact(engine, tid, ROWS)
    engine.dispose()
