"""Prometheus metrics: the web's /metrics from the database, a worker's own histograms
on WORKER_METRICS_PORT, and the token rule. Real workers on both stacks."""

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import free_port, upload, wait_for, wait_rows, wait_status, write_rows

N = 5000


def samples(text: str) -> dict:
    """{(name, frozenset(labels)): value} of a scrape."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200, response.data
    assert response.content_type.startswith("text/plain")
    return samples(response.get_data(as_text=True))


def test_metrics_count_a_finished_import_exactly(client, start_worker, tmp_path):
    start_worker(1)
    csv = write_rows(tmp_path / "rows.csv", N)
    with open(csv, "a") as f:
        f.write("not,enough,fields\n")  # one row error
    tid = upload(client, csv).get_json()["id"]
    wait_status(client, tid, "COMPLETED")
    m = scrape(client)
    assert m[("taskctl_rows_total", frozenset({("kind", "import")}))] == N
    assert m[("taskctl_row_errors_total", frozenset({("kind", "import")}))] == 1
    completed = frozenset({("kind", "import"), ("status", "COMPLETED")})
    assert m[("taskctl_tasks", completed)] == 1
    assert m[("taskctl_tasks", frozenset({("kind", "export"), ("status", "QUEUED")}))] == 0
    assert m[("taskctl_rollback_rows_total", frozenset())] == 0
    assert m[("taskctl_workers", frozenset())] == 1

    assert client.post(f"/terminate/{tid}").status_code == 202
    revoked = wait_status(client, tid, "REVOKED")
    assert (revoked["rows_imported"], revoked["rows_rolled_back"]) == (0, N)
    m = scrape(client)
    assert m[("taskctl_rollback_rows_total", frozenset())] == N
    assert m[("taskctl_rows_total", frozenset({("kind", "import")}))] == N  # a counter: kept
    assert m[("taskctl_tasks", completed)] == 0


def test_worker_serves_its_own_histograms(client, start_worker, tmp_path):
    port = free_port()
    start_worker(2, WORKER_METRICS_PORT=port, IMPORT_MAX_ROWS_PER_S=4000, IMPORT_BATCH_SIZE=200)
    tid = upload(client, write_rows(tmp_path / "rows.csv", 40_000)).get_json()["id"]
    wait_rows(client, tid, 1000)
    assert client.post(f"/pause/{tid}").status_code == 202
    wait_status(client, tid, "PAUSED")

    def paused_observed():
        m = samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
        return m.get(("taskctl_action_seconds_count", frozenset({("action", "pause")}))) and m

    m = wait_for(paused_observed, 30, "the pause in the worker's metrics")
    assert m[("taskctl_action_seconds_count", frozenset({("action", "pause")}))] == 1
    assert m[("taskctl_batch_commit_seconds_count", frozenset())] >= 5
    # The web serves none of them: they live in the worker that observed them.
    assert ("taskctl_batch_commit_seconds_count", frozenset()) not in scrape(client)


@pytest.mark.parametrize("public", ["", "1"])
def test_metrics_follow_the_token_rule(stack, monkeypatch, public):
    from app import create_app
    from app.core.migrate import upgrade

    for key, value in {**stack, "API_TOKEN": "s3cret", "METRICS_PUBLIC": public}.items():
        monkeypatch.setenv(key, value)
    app = create_app({"TESTING": True})
    upgrade(app)
    client = app.test_client()
    assert client.get("/metrics").status_code == (200 if public else 401)
    headers = {"Authorization": "Bearer s3cret"}
    assert client.get("/metrics", headers=headers).status_code == 200
    assert client.get("/tasks").status_code == 401  # METRICS_PUBLIC opens /metrics only
    from app.core.models import db

    with app.app_context():
        db.engine.dispose()
