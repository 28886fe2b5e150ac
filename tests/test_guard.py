"""Foreign Host names and cross-origin state changes are refused before any work."""

import pytest

from app import config
from app.web.guard import allowed_host

EVIL = "http://evil.example"


@pytest.fixture
def queued(app):
    """A QUEUED import task with no worker: any action on it would change it."""
    store = app.extensions["store"]
    return store.create_task(kind="import", filename="a.csv", header='["a"]')


def status(client, task_id):
    return client.get(f"/tasks/{task_id}").get_json()["status"]


def unsafe_operations(client):
    spec = client.get("/openapi.json").get_json()
    for path, item in spec["paths"].items():
        for method in item:
            if method.upper() in ("POST", "PUT", "PATCH", "DELETE"):
                yield method.upper(), path.replace("{task_id}", "1")


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL},
        {"Origin": "null"},
        {"Origin": "http://localhost:8080"},  # another port on our host: another origin
        {"Origin": "https://localhost"},  # another scheme
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost"},
    ],
)
def test_cross_origin_action_is_refused_and_changes_nothing(client, queued, headers):
    for action in ("pause", "terminate"):
        r = client.post(f"/{action}/{queued}", headers=headers)
        assert r.status_code == 403, r.get_data(as_text=True)
        assert r.get_json()["error"]["code"] == 403
        assert r.headers["X-Frame-Options"] == "DENY"  # still our response
    assert status(client, queued) == "QUEUED"


def test_every_unsafe_method_on_every_path_is_checked(client):
    ops = set(unsafe_operations(client))
    assert {("POST", "/"), ("POST", "/exports"), ("POST", "/pause/1")} <= ops
    ops |= {("PUT", "/tasks/1"), ("DELETE", "/tasks/1"), ("PATCH", "/nowhere")}
    for method, path in sorted(ops):
        r = client.open(path, method=method, headers={"Origin": EVIL})
        assert r.status_code == 403, (method, path, r.status_code)
        r = client.open(path, method=method, headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403, (method, path, r.status_code)


def test_own_page_and_headerless_clients_go_through(client, queued):
    own = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert client.post(f"/pause/{queued}", headers=own).status_code == 202
    assert client.post(f"/resume/{queued}").status_code == 202  # curl: no Origin at all
    assert status(client, queued) == "QUEUED"
    # A user typing the URL, or the same site's page on our port: not refused.
    r = client.post(f"/pause/{queued}", headers={"Sec-Fetch-Site": "none"})
    assert r.status_code == 202
    # Reads are never refused for their origin (the CSP and CORS keep them ours).
    assert client.get("/tasks", headers={"Origin": EVIL}).status_code == 200


@pytest.mark.parametrize("host", ["attacker.example", "localhost.evil", "evil:5001", "[::2]"])
def test_foreign_host_is_a_400_for_reads_and_writes(client, queued, host):
    for method, path in (("GET", "/tasks"), ("GET", f"/tasks/{queued}"), ("POST", "/exports")):
        r = client.open(path, method=method, headers={"Host": host})
        assert r.status_code == 400, (host, path, r.status_code)
        assert r.get_json()["error"]["code"] == 400
        assert host.split(":")[0] not in r.get_data(as_text=True)  # no echo
    r = client.post(f"/terminate/{queued}", headers={"Host": host})
    assert r.status_code == 400
    assert status(client, queued) == "QUEUED"


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:5001", "127.0.0.1:5001", "[::1]:5001"])
def test_local_names_are_served_with_any_port(client, host):
    assert client.get("/tasks", headers={"Host": host}).status_code == 200


def test_allowed_hosts_setting(monkeypatch):
    monkeypatch.delenv("ALLOWED_HOSTS", raising=False)
    monkeypatch.setenv("HOST", "10.1.2.3")
    names = config.from_environment()["ALLOWED_HOSTS"]
    assert names == ["localhost", "127.0.0.1", "[::1]", "10.1.2.3"]
    monkeypatch.setenv("ALLOWED_HOSTS", "web, Example.ORG ,::1")
    names = config.from_environment()["ALLOWED_HOSTS"]
    assert names == ["web", "example.org", "[::1]"]
    assert allowed_host("example.org:443", names) and allowed_host("[::1]", names)
    for bad in ("", None, "web@evil", "web/x", "web:port", "[::1", "evil.example"):
        assert not allowed_host(bad, names), bad


def test_proxy_fix_trusts_the_configured_hops_only(app, monkeypatch):
    """Behind the front proxy the origin check sees the scheme the browser used."""
    from app import create_app

    app.config["ALLOWED_HOSTS"] = ["localhost"]
    https = {"Origin": "https://localhost", "X-Forwarded-Proto": "https"}
    # No proxy trusted (the default): X-Forwarded-Proto is the client's word, ignored.
    assert app.test_client().post("/pause/999999", headers=https).status_code == 403
    monkeypatch.setenv("PROXY_HOPS", "1")
    behind = create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"]}
    )
    assert behind.test_client().post("/pause/999999", headers=https).status_code == 404
