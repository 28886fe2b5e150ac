"""Small defects of issue 14, each pinned: REVOKED counts, paused_at against
updated_at, the FAILED message's grammar, and log lines that name their task."""

import json

from tests.helpers import upload, wait_rows, wait_status, write_rows


def test_revoked_task_reports_what_it_holds_now(client, start_worker, tmp_path):
    start_worker(1, IMPORT_MAX_ROWS_PER_S=5000, IMPORT_BATCH_SIZE=200)
    tid = upload(client, write_rows(tmp_path / "rows.csv", 20_000)).get_json()["id"]
    wait_rows(client, tid, 1000)
    assert client.post(f"/pause/{tid}").status_code == 202
    paused = wait_status(client, tid, "PAUSED")
    # One statement's clock: the pause's time is the update's time, never later.
    assert paused["paused_at"] == paused["updated_at"]
    assert client.post(f"/terminate/{tid}").status_code == 202
    revoked = wait_status(client, tid, "REVOKED")
    assert revoked["rows_imported"] == 0
    assert revoked["rows_rolled_back"] == paused["rows_imported"] > 0
    assert revoked["last_row"] == paused["last_row"]  # the checkpoint, the rollback's bound
    assert (revoked["progress"], revoked["rows_per_second"], revoked["eta_seconds"]) == (
        None,
        None,
        None,
    )
    listed = client.get("/terminated_tasks").get_json()["tasks"]
    assert [(t["id"], t["rows_imported"], t["progress"]) for t in listed] == [(tid, 0, None)]


def test_one_row_error_is_one_row_error(client, start_worker, tmp_path):
    start_worker(1)
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2\n3\n4,5\n")
    tid = upload(client, path, max_errors=0).get_json()["id"]
    failed = wait_status(client, tid, "FAILED")
    assert failed["error"] == "1 row error passed max_errors=0"


def test_worker_log_lines_name_task_kind_and_run_in_json(client, start_worker, tmp_path):
    worker = start_worker(1, LOG_FORMAT="json", IMPORT_BATCH_LOG=1, IMPORT_BATCH_SIZE=500)
    tid = upload(client, write_rows(tmp_path / "rows.csv", 3000)).get_json()["id"]
    wait_status(client, tid, "COMPLETED")
    lines = [line for line in worker.log.read_text().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]  # every JSON line is one object
    batches = [r for r in records if r["message"].startswith("batch ")]
    assert len(batches) >= 6
    runs = {r["run"] for r in batches}
    assert {(r["task_id"], r["kind"]) for r in batches} == {(tid, "import")}
    assert len(runs) == 1 and len(runs.pop()) == 8
    assert all({"time", "level", "logger"} <= r.keys() for r in records)
    ready = [r for r in records if r["message"].endswith(" ready.")]
    assert ready and "task_id" not in ready[0]  # no task, no task fields
