"""The operator's command line (`flask --app app tasks ...`) against a live service on
both brokers: `python run.py` with its embedded worker, or run.py + `python worker.py`
on Redis. Each verb runs as its own process, as an operator would run it."""

import json
import os
import subprocess
import sys

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.helpers import ROOT, wait_for, write_rows

ROWS = 100_000
SLOW = {"IMPORT_MAX_ROWS_PER_S": "1000", "IMPORT_BATCH_SIZE": "200"}


@pytest.fixture
def service(stack, start_worker, live_server_factory):
    """(base URL, environment for the CLI) of a live service on the stack."""
    # The worker's own sweeper runs once at start, then not for an hour: a task
    # rung again in this test was rung by `tasks sweep`.
    env = {**stack, **SLOW, "SWEEP_INTERVAL_S": "3600", "HEARTBEAT_TIMEOUT_S": "30"}
    if stack["REDIS_URL"]:
        start_worker(**env)
    return live_server_factory(**env), env


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    for key in [k for k, v in full.items() if v == ""]:
        del full[key]
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "tasks", *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def status(base: str, task_id: int) -> str:
    return requests.get(f"{base}/tasks/{task_id}", timeout=10).json()["status"]


def wait_status(base: str, task_id: int, want: str) -> None:
    wait_for(lambda: status(base, task_id) == want, 120, f"task {task_id} {want}", interval=0.1)


def upload(base: str, path) -> int:
    with open(path, "rb") as f:
        r = requests.post(f"{base}/", files={"file": (path.name, f, "text/csv")}, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def test_every_verb_against_a_live_service(service, tmp_path):
    base, env = service
    task_id = upload(base, write_rows(tmp_path / "rows.csv", ROWS))
    wait_status(base, task_id, "PROCESSING")

    listed = cli(env, "list")
    assert listed.returncode == 0, listed.stderr
    assert any(
        line.split()[:3] == [str(task_id), "import", "PROCESSING"]
        for line in listed.stdout.splitlines()
    )
    only = cli(env, "list", "--status", "COMPLETED", "--json")
    assert only.returncode == 0
    assert task_id not in [json.loads(line)["id"] for line in only.stdout.splitlines()]
    shown = cli(env, "show", str(task_id))
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == task_id

    paused = cli(env, "pause", str(task_id))
    assert paused.returncode == 0, paused.stderr
    wait_status(base, task_id, "PAUSED")
    again = cli(env, "pause", str(task_id))
    assert (again.returncode, again.stdout.strip()) == (0, f"task {task_id}: already PAUSED")

    resumed = cli(env, "resume", str(task_id))  # the CLI rings the broker itself
    assert (resumed.returncode, resumed.stdout.strip()) == (0, f"task {task_id}: QUEUED")
    wait_status(base, task_id, "PROCESSING")

    terminated = cli(env, "terminate", str(task_id))  # and wakes the workers
    assert terminated.returncode == 0, terminated.stderr
    wait_status(base, task_id, "REVOKED")

    refused = cli(env, "resume", str(task_id))
    assert refused.returncode == 1
    assert "cannot resume a task that is REVOKED" in refused.stderr
    for verb in ("show", "pause", "resume", "terminate"):
        missing = cli(env, verb, "999999")
        assert missing.returncode == 2 and "no such task: 999999" in missing.stderr


def test_sweep_rings_a_queued_task_whose_message_was_lost(service, tmp_path):
    base, env = service
    task_id = upload(base, write_rows(tmp_path / "rows.csv", 3000))
    wait_status(base, task_id, "PROCESSING")
    assert requests.post(f"{base}/pause/{task_id}", timeout=10).status_code == 202
    wait_status(base, task_id, "PAUSED")
    # As if it had been resumed a minute ago and the broker then lost the message.
    url = env["DATABASE_URL"] or f"sqlite:///{env['DATA_DIR']}/app.db"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM paused_tasks WHERE task_id = :t"), {"t": task_id})
        conn.execute(
            text(
                "UPDATE tasks SET status = 'QUEUED', heartbeat_at = heartbeat_at - 3600 "
                "WHERE id = :t"
            ),
            {"t": task_id},
        )
    engine.dispose()
    swept = cli(env, "sweep")
    assert swept.returncode == 0, swept.stderr
    assert swept.stdout.strip() == f"rang 1 task(s) again: {task_id}"
    wait_status(base, task_id, "COMPLETED")
    assert requests.get(f"{base}/tasks/{task_id}", timeout=10).json()["rows_imported"] == 3000
