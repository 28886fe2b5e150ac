"""bench/load.py, bounded, against the real service on each stack: no 5xx, every task exact.

LOAD_SECONDS sets the length of the load phase (20 s here; the figures in docs/load.md
come from the full 60 s run of `python bench/load.py`); it goes on until at least
REQUESTS requests were made, so a busy machine makes it longer, never failing.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, RUNNING_SERVERS, Proc, stack_env, wait_for

TOKEN = "load-token"
# Its 50 clients are one address: the per-client limits are lifted, as bench/load.py does.
UNLIMITED = {"RATE_LIMIT": "1000000/second", "MAX_ACTIVE_TASKS_PER_CLIENT": "0"}
SECONDS = os.environ.get("LOAD_SECONDS", "20")
REQUESTS = 1000


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_load_keeps_every_task_exact(kind, live_server_factory, tmp_path):
    with stack_env(kind, tmp_path / "data") as env:
        worker = None
        if env["REDIS_URL"]:
            worker = Proc.start(
                ["worker.py"], {**env, "WORKER_CONCURRENCY": "2"}, tmp_path / "w.log"
            )
            wait_for(lambda: worker.log_contains(" ready."), 60, "worker ready")
        try:
            base_url = live_server_factory(
                **env, **UNLIMITED, API_TOKEN=TOKEN, SWEEP_INTERVAL_S="1"
            )
            database_url = env["DATABASE_URL"] or f"sqlite:///{tmp_path / 'data' / 'app.db'}"
            figures = tmp_path / "load.json"
            result = subprocess.run(
                [
                    *(sys.executable, str(ROOT / "bench" / "load.py"), "--url", base_url),
                    *("--token", TOKEN, "--database-url", database_url),
                    *("--duration", SECONDS, "--min-requests", str(REQUESTS)),
                    *("--json", str(figures)),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
        finally:
            if worker is not None:
                worker.kill_group()
    output = (result.stdout + result.stderr)[-20000:]
    assert result.returncode == 0, output
    load = json.loads(figures.read_text())
    assert load["server_errors"] == 0 and load["failures"] == [] and load["problems"] == []
    assert load["tasks"] >= 10 and load["requests"] >= REQUESTS, output
    assert set(load["final"]) <= {"COMPLETED", "REVOKED"}
    assert "unhandled error" not in RUNNING_SERVERS[base_url].log.read_text(errors="replace")
    print(output.splitlines()[-1])
