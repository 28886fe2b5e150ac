"""The lifecycle with the runner driven in-process: each run is a thread of the test.

The fast tier's view of pause, resume, terminate and duplicate delivery; the same
through real worker processes on a real broker is tests/test_lifecycle.py.
"""

import threading

from app.core import runner
from tests.helpers import assert_exact, row_stats, task, upload, wait_rows, write_rows

ROWS = 20_000
SLOW = 20  # rows a second, one a batch: a run that cannot finish while the test acts


def start_run(app, task_id: int, **config) -> threading.Thread:
    """runner.run on `task_id` in a thread, as a worker's pool process would."""
    settings = {**app.config, **config}

    def run():
        with app.app_context():
            runner.run(app.extensions["store"], task_id, settings, lambda _id: None)

    thread = threading.Thread(target=run, name=f"run-{task_id}")
    thread.start()
    return thread


def test_pause_resume_and_terminate_with_the_runner_in_process(app, client, engine, tmp_path):
    tid = upload(client, write_rows(tmp_path / "a.csv", ROWS)).get_json()["id"]
    run = start_run(app, tid, IMPORT_MAX_ROWS_PER_S=SLOW)
    wait_rows(client, tid, 1)
    assert client.post(f"/pause/{tid}").status_code == 202
    run.join()
    paused = task(client, tid)
    assert paused["status"] == "PAUSED" and 0 < paused["last_row"] < ROWS
    count, distinct, _, top = row_stats(engine, tid)
    assert count == distinct == paused["rows_imported"] and top <= paused["last_row"]

    assert client.post(f"/resume/{tid}").status_code == 202
    start_run(app, tid).join()
    assert task(client, tid)["status"] == "COMPLETED"
    assert_exact(engine, tid, ROWS)

    assert client.post(f"/terminate/{tid}").status_code == 202
    assert runner.rollback(app.extensions["store"], tid, app.config)
    assert task(client, tid)["status"] == "REVOKED"
    assert_exact(engine, tid, 0)


def test_a_duplicate_delivery_runs_the_task_once(app, client, engine, tmp_path):
    tid = upload(client, write_rows(tmp_path / "a.csv", ROWS)).get_json()["id"]
    first = start_run(app, tid, IMPORT_MAX_ROWS_PER_S=SLOW)
    wait_rows(client, tid, 1)  # claimed and running
    start_run(app, tid).join()  # the same message delivered again: not claimed
    running = task(client, tid)
    assert running["status"] == "PROCESSING" and running["last_row"] < ROWS
    assert client.post(f"/pause/{tid}").status_code == 202
    first.join()
    assert client.post(f"/resume/{tid}").status_code == 202
    start_run(app, tid).join()
    assert task(client, tid)["status"] == "COMPLETED"
    assert_exact(engine, tid, ROWS)
