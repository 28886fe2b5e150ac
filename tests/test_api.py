"""The HTTP contract without workers: validation, errors, paging, actions."""

import io

import pytest

from app.core.store import Step
from tests.helpers import task, upload, write_rows


def post_file(client, content: bytes, name="data.csv", **form):
    data = {"file": (io.BytesIO(content), name), **{k: str(v) for k, v in form.items()}}
    return client.post("/", data=data, content_type="multipart/form-data")


def error_of(response, code):
    assert response.status_code == code, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def task_count(engine):
    from sqlalchemy import text

    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM tasks")).scalar()


def test_upload_answers_202_with_location(client, tmp_path, engine):
    response = upload(client, write_rows(tmp_path / "x.csv", 10))
    assert response.status_code == 202
    body = response.get_json()
    assert response.headers["Location"] == f"/tasks/{body['id']}"
    assert body["status"] == "QUEUED" and body["kind"] == "import"
    assert body["filename"] == "x.csv" and body["bytes_total"] > 0
    assert task(client, body["id"])["header"][0] == "seq"


@pytest.mark.parametrize(
    "content, form, needle",
    [
        (b"", {}, "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", {}, "not text"),
        ("a,b\n\u00e9,1\n".encode("latin-1"), {}, "not valid utf-8"),
        (b"a,b\r1,2\r", {}, "bare CR"),
        (b"a,,c\n1,2,3\n", {}, "empty name"),
        (b"a,a\n1,2\n", {}, "duplicate"),
        (b"a,b\n1,2\n", {"has_header": "maybe"}, "has_header"),
        (b"a,b\n1,2\n", {"delimiter": ";;"}, "delimiter"),
        (b"a,b\n1,2\n", {"delimiter": '"'}, "delimiter"),
        (b"a,b\n1,2\n", {"encoding": "nope"}, "encoding"),
        (b"a,b\n1,2\n", {"max_errors": "-1"}, "max_errors"),
        (b"a,b\n1,2\n", {"max_errors": "many"}, "max_errors"),
    ],
)
def test_bad_uploads_are_400_and_create_nothing(client, engine, app, content, form, needle):
    error = error_of(post_file(client, content, **form), 400)
    assert needle in error["message"]
    assert task_count(engine) == 0
    import os

    assert os.listdir(os.path.join(app.config["DATA_DIR"], "uploads")) == []


def test_no_file_part_and_empty_name(client):
    assert (
        "file"
        in error_of(client.post("/", data={}, content_type="multipart/form-data"), 400)["message"]
    )
    response = client.post(
        "/", data={"file": (io.BytesIO(b"a\n1\n"), "")}, content_type="multipart/form-data"
    )
    error_of(response, 400)


def test_upload_over_the_limit_is_413(app, client):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    error_of(post_file(client, b"a,b\n" + b"1,2\n" * 1000), 413)


def test_same_file_name_twice_stays_apart(client, app):
    first = post_file(client, b"a\n1\n", name="../../same.csv").get_json()
    second = post_file(client, b"b\n2\n", name="../../same.csv").get_json()
    assert first["id"] != second["id"] and first["header"] == ["a"] and second["header"] == ["b"]
    import os

    files = os.listdir(os.path.join(app.config["DATA_DIR"], "uploads"))
    assert len(files) == 2 and all(f.endswith(".csv") and "same" not in f for f in files)


def test_unknown_task_is_404_everywhere(client):
    for method, path in [
        ("get", "/tasks/999"),
        ("get", "/tasks/999/errors"),
        ("get", "/csv_entries?task_id=999"),
        ("post", "/pause/999"),
        ("post", "/resume/999"),
        ("post", "/terminate/999"),
        ("get", "/tasks/abc"),
    ]:
        error_of(getattr(client, method)(path), 404)


def test_actions_follow_the_state_table(client, tmp_path):
    tid = post_file(client, b"a\n1\n").get_json()["id"]
    # No worker is running: the task stays QUEUED until we act.
    assert client.post(f"/resume/{tid}").status_code == 200  # goal holds
    assert client.post(f"/pause/{tid}").status_code == 202
    one = task(client, tid)
    assert one["status"] == "PAUSED" and one["paused_at"]
    assert client.post(f"/pause/{tid}").get_json()["paused_at"] == one["paused_at"]
    paused = client.get("/paused_tasks").get_json()["tasks"]
    assert [t["id"] for t in paused] == [tid] and paused[0]["paused_at"] == one["paused_at"]
    assert client.post(f"/resume/{tid}").status_code == 202
    assert task(client, tid)["status"] == "QUEUED" and task(client, tid)["paused_at"] is None
    assert client.get("/paused_tasks").get_json()["tasks"] == []
    assert client.post(f"/terminate/{tid}").status_code == 202
    assert task(client, tid)["status"] == "TERMINATING"
    assert client.post(f"/terminate/{tid}").status_code == 200
    for action in ("pause", "resume"):
        error = error_of(client.post(f"/{action}/{tid}"), 409)
        assert error["status"] == "TERMINATING" and "TERMINATING" in error["message"]


def test_a_task_carries_the_actions_allowed_now(app, client):
    """`actions` in every answer about a task: those that would change it, per status."""
    store = app.extensions["store"]
    tid = post_file(client, b"a\n1\n").get_json()["id"]

    def actions():
        one = task(client, tid)
        listed = client.get(f"/tasks?status={one['status']}").get_json()["tasks"]
        assert [t["actions"] for t in listed if t["id"] == tid] == [one["actions"]]
        return one["status"], one["actions"]

    assert actions() == ("QUEUED", ["pause", "terminate"])
    assert client.post(f"/pause/{tid}").get_json()["actions"] == ["resume", "terminate"]
    assert actions() == ("PAUSED", ["resume", "terminate"])
    client.post(f"/resume/{tid}")
    token, _ = store.claim(tid)  # a run takes it (no worker here)
    assert actions() == ("PROCESSING", ["pause", "terminate"])
    client.post(f"/pause/{tid}")
    assert actions() == ("PAUSING", ["resume", "terminate"])
    client.post(f"/resume/{tid}")
    store.fail(tid, token, "boom")
    assert actions() == ("FAILED", ["terminate"])
    assert client.post(f"/terminate/{tid}").get_json()["actions"] == []
    assert actions() == ("TERMINATING", [])
    token, _ = store.claim_rollback(tid)
    store.finish_rollback(tid, token)
    assert actions() == ("REVOKED", [])
    assert client.get("/terminated_tasks").get_json()["tasks"][0]["actions"] == []

    done = post_file(client, b"a\n").get_json()["id"]  # header only: one empty step
    token, _ = store.claim(done)
    store.commit(done, token, Step(checkpoint={}, done=True))
    assert task(client, done)["actions"] == ["terminate"]


def test_lists_page_by_key_and_keep_filters(client):
    ids = [post_file(client, b"a\n1\n").get_json()["id"] for _ in range(5)]
    client.post(f"/pause/{ids[0]}")
    seen, path = [], "/tasks?limit=2&status=QUEUED"
    while path:
        body = client.get(path).get_json()
        assert len(body["tasks"]) <= 2
        seen += [t["id"] for t in body["tasks"]]
        path = body["next"]
        if path:
            assert "status=QUEUED" in path and "limit=2" in path
    assert seen == sorted(ids[1:], reverse=True)


@pytest.mark.parametrize(
    "path",
    [
        "/tasks?limit=0",
        "/tasks?limit=1001",
        "/tasks?limit=x",
        "/tasks?status=DONE",
        "/tasks?cursor=%%%",
        "/tasks?cursor=bm90LWEtbnVtYmVy",
        "/csv_entries?task_id=x",
    ],
)
def test_malformed_queries_are_400(client, path):
    error_of(client.get(path), 400)


def test_openapi_describes_every_path(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    for path in [
        "/",
        "/tasks",
        "/tasks/{task_id}",
        "/tasks/{task_id}/errors",
        "/csv_entries",
        "/pause/{task_id}",
        "/resume/{task_id}",
        "/terminate/{task_id}",
        "/paused_tasks",
        "/terminated_tasks",
        "/healthz",
    ]:
        assert path in spec["paths"], path


def test_healthz_reports_database_and_broker(app, client):
    """No worker runs here. On the embedded broker this node is down without its
    worker (503); with Redis it is up (200, workers: 0) unless asked for one."""
    response = client.get("/healthz")
    body = response.get_json()
    assert body == {"database": "ok", "broker": "ok", "workers": 0}
    assert response.status_code == (200 if app.config["REDIS_URL"] else 503)
    assert client.get("/healthz?workers=0").status_code == 200
    assert client.get("/healthz?workers=1").status_code == 503
    assert client.get("/healthz?workers=x").status_code == 400


def test_page_is_served(client):
    response = client.get("/")
    assert response.status_code == 200 and b"<form" in response.data


def test_views_read_through_the_store_not_the_session():
    """One way to load a task: the API reads through Store (its reader), as it writes;
    the Flask-SQLAlchemy session (a second connection source) is not used by views."""
    from pathlib import Path

    app_dir = Path(__file__).resolve().parent.parent / "app"
    views = [*(app_dir / "web").rglob("*.py"), *(app_dir / "kinds").rglob("*.py")]
    assert [str(p.relative_to(app_dir)) for p in views if "db.session" in p.read_text()] == []
