"""Per-client limits: RATE_LIMIT on state changes, MAX_ACTIVE_TASKS_PER_CLIENT (429)."""

import io

import pytest

from tests.helpers import task

A, B = {"REMOTE_ADDR": "10.0.0.1"}, {"REMOTE_ADDR": "10.0.0.2"}


def upload(client, env=A):
    data = {"file": (io.BytesIO(b"a,b\n1,2\n"), "a.csv")}
    return client.post("/", data=data, content_type="multipart/form-data", environ_base=env)


def too_many(response):
    assert response.status_code == 429, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == 429
    assert int(response.headers["Retry-After"]) >= 1


@pytest.fixture
def limited(app):
    app.config["MAX_ACTIVE_TASKS_PER_CLIENT"] = 0
    app.config["RATE_LIMIT"] = "3/minute"
    return app.test_client()


def test_unsafe_requests_share_one_rate_per_client(limited):
    # Three changes of any kind (even ones that fail) use up the client's budget...
    assert limited.post("/pause/999999", environ_base=A).status_code == 404
    assert upload(limited).status_code == 202
    assert limited.post("/exports", json={"task_id": "x"}, environ_base=A).status_code == 400
    too_many(limited.post("/resume/999999", environ_base=A))
    too_many(upload(limited))
    # ...reads never count and are never refused; another client has its own budget.
    for _ in range(10):
        assert limited.get("/tasks", environ_base=A).status_code == 200
    assert limited.get("/healthz", environ_base=A).status_code in (200, 503)
    assert limited.get("/", environ_base=A).status_code == 200
    assert upload(limited, B).status_code == 202


def test_counts_live_in_redis_when_redis_url_is_set(limited, app):
    """Every web process (and host) shares one count: Redis holds it."""
    limited.post("/pause/999999", environ_base=A)
    if not app.config["REDIS_URL"]:
        assert type(app.extensions["limiter"].storage).__name__ == "MemoryStorage"
        return
    import redis

    keys = redis.Redis.from_url(app.config["REDIS_URL"]).keys("*taskctl*")
    assert any(b"10.0.0.1" in key for key in keys), keys


def test_a_download_link_is_not_counted(limited, app):
    task_id = app.extensions["store"].create_task(kind="export", header="[]")
    for _ in range(6):
        r = limited.post(f"/tasks/{task_id}/download_link", environ_base=A)
        assert r.status_code == 200


def test_the_default_rate_is_per_second_and_per_minute(app):
    from limits import parse_many

    parsed = [(x.amount, x.GRANULARITY.name) for x in parse_many(app.config["RATE_LIMIT"])]
    assert parsed == [(30, "second"), (1200, "minute")]


def test_unfinished_tasks_are_capped_per_client(app, client):
    app.config["MAX_ACTIVE_TASKS_PER_CLIENT"] = 3
    ids = [upload(client).get_json()["id"] for _ in range(3)]  # QUEUED: no worker here
    too_many(upload(client))
    too_many(client.post("/exports", json={}, environ_base=A))
    assert upload(client, B).status_code == 202  # another client: its own count
    # A PAUSED task costs nothing: pause one, and the client may start another...
    assert client.post(f"/pause/{ids[0]}", environ_base=A).status_code == 202
    fourth = upload(client)
    assert fourth.status_code == 202 and task(client, fourth.get_json()["id"])["status"]
    # ...but resuming the paused one would make four: refused, and it stays PAUSED.
    too_many(client.post(f"/resume/{ids[0]}", environ_base=A))
    assert task(client, ids[0])["status"] == "PAUSED"
    # Finished tasks free their place (terminate of QUEUED goes to TERMINATING, then
    # REVOKED by a worker; neither counts).
    assert client.post(f"/terminate/{ids[1]}", environ_base=A).status_code == 202
    assert client.post(f"/resume/{ids[0]}", environ_base=A).status_code == 202
    assert task(client, ids[0])["status"] == "QUEUED"


def test_the_limits_key_on_the_forwarded_client_behind_the_proxy(app, monkeypatch):
    from app import create_app

    monkeypatch.setenv("PROXY_HOPS", "1")
    behind = create_app({"TESTING": True, "RATE_LIMIT": "2/minute"})
    client = behind.test_client()
    proxy = {"REMOTE_ADDR": "127.0.0.1"}
    for who in ("198.51.100.1", "198.51.100.2"):
        headers = {"X-Forwarded-For": who}
        for _ in range(2):
            r = client.post("/pause/999999", headers=headers, environ_base=proxy)
            assert r.status_code == 404
        too_many(client.post("/pause/999999", headers=headers, environ_base=proxy))
