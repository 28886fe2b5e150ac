"""Fixtures: an app on a real database, real worker processes, a real server.

Two stacks: "sqlite" (SQLite + the embedded filesystem broker, as `make run`)
and "postgres" (PostgreSQL + Redis, as a scaled deployment). The postgres
stack needs DATABASE_URL and REDIS_URL; without them its tests skip, except
under CI=true, where they fail.
"""

import pytest

from app import create_app
from app.core.migrate import upgrade
from tests.helpers import RUNNING_SERVERS, Proc, free_port, stack_env, wait_for


@pytest.fixture(params=["sqlite", "postgres"])
def stack(request, tmp_path):
    """Environment for the app and its workers: DATA_DIR, database and broker."""
    with stack_env(request.param, tmp_path / "data") as env:
        yield env


@pytest.fixture
def app(stack, monkeypatch):
    for key, value in stack.items():
        monkeypatch.setenv(key, value)
    application = create_app({"TESTING": True})
    upgrade(application)
    yield application
    from app.core.models import db

    with application.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def engine(app):
    """A plain engine on the app's database, for checking results with SQL."""
    from app.core.models import db

    with app.app_context():
        eng = db.engine
    return eng  # no app context stays pushed: each request gets its own session


@pytest.fixture
def start_worker(stack, tmp_path):
    """Start real worker processes (`python worker.py`) on the stack."""
    procs: list[Proc] = []

    def start(concurrency: int = 2, **env) -> Proc:
        full = {**stack, "WORKER_CONCURRENCY": str(concurrency), "SWEEP_INTERVAL_S": "1"}
        full.update({k: str(v) for k, v in env.items()})
        proc = Proc.start(["worker.py"], full, tmp_path / f"worker{len(procs)}.log")
        procs.append(proc)
        wait_for(lambda: proc.log_contains(" ready."), 60, f"worker ready ({proc.log})")
        return proc

    yield start
    for proc in procs:
        proc.kill_group()  # graceful stops are tested where they matter


@pytest.fixture
def live_server_factory(tmp_path):
    """Start `python run.py` (app + embedded worker) and return its base URL."""
    procs: list[Proc] = []

    def start(**env) -> str:
        import requests

        port = free_port()
        full = {
            "DATA_DIR": str(tmp_path / "live"),
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "DATABASE_URL": "",
            "REDIS_URL": "",
            "WEB_CONCURRENCY": "2",
            "SWEEP_INTERVAL_S": "1",
        }
        full.update({k: str(v) for k, v in env.items()})
        proc = Proc.start(["run.py"], full, tmp_path / f"server{len(procs)}.log")
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"

        def healthy():
            try:
                return requests.get(f"{base}/healthz", timeout=5).json().get("workers", 0) >= 1
            except (requests.RequestException, ValueError):
                return False

        wait_for(healthy, 90, f"server at {base} healthy ({proc.log})")
        RUNNING_SERVERS[base] = proc
        return base

    yield start
    for proc in procs:
        proc.kill_group()
    RUNNING_SERVERS.clear()


@pytest.fixture
def live_server(live_server_factory):
    return live_server_factory()


# Fixtures that start real processes: a test using one belongs to the slow tier.
PROCESS_FIXTURES = {"start_worker", "live_server_factory", "live_server"}


def pytest_collection_modifyitems(items):
    """Mark `slow` every test that starts real processes (`make test-fast` skips them)."""
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
