"""Fixtures: an app on a real database, real worker processes, a real server.

Two stacks: "sqlite" (SQLite + the embedded filesystem broker, as `make run`)
and "postgres" (PostgreSQL + Redis, as a scaled deployment). Tests marked `s3`
run on a third, "s3": "postgres" with uploads and exports in a bucket of moto's
S3 server (tests/s3.py). That is a marked subset, not the whole suite again: the
tests where the storage is on the path (resume by byte offset, takeover after a
kill, rollback removing the upload, every CSV shape of the corpus read through
ranged GETs, exports); the rest (API shapes, auth, the page, schema, broker
faults) never touches a byte of an upload, so a second run would add minutes
and test nothing new. The postgres
stack needs DATABASE_URL and REDIS_URL; without them its tests skip, except
under CI=true, where they fail.
"""

import pytest

from app import create_app
from app.core.migrate import upgrade
from tests.helpers import RUNNING_SERVERS, Proc, free_port, stack_env, wait_for

STACKS = ["sqlite", "postgres"]


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "s3: also run on the object-storage stack (PostgreSQL + Redis + uploads and exports "
        "in moto's S3 server): the tests where the bytes live matters",
    )


def pytest_generate_tests(metafunc):
    """`stack` runs each test on both stacks, and on "s3" too for tests marked s3."""
    if "stack" not in metafunc.fixturenames or hasattr(metafunc.module, "stack"):
        return  # no stack, or the module's own `stack` fixture (tests/test_compose.py)
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "stack" in (names.replace(" ", "").split(",") if isinstance(names, str) else names):
            return  # the test chose its stacks
    s3 = metafunc.definition.get_closest_marker("s3") is not None
    metafunc.parametrize("stack", STACKS + ["s3"] * s3, indirect=True)


@pytest.fixture
def stack(request, tmp_path):
    """Environment for the app and its workers: DATA_DIR, database, broker (and storage)."""
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


def pytest_collection_modifyitems(config, items):
    """Mark `slow` every test that starts real processes (`make test-fast` skips them).

    A compose case runs only the checks it lists (tests/test_compose.py): the others
    are deselected, never skipped.
    """
    kept, dropped = [], []
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        mark = item.get_closest_marker("check")
        case = getattr(getattr(item, "callspec", None), "params", {}).get("compose")
        if mark is not None and case is not None and mark.args[0] not in case.checks:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
