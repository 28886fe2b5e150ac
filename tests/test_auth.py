"""API_TOKEN, signed download links, security headers, SECRET_KEY and debug mode."""

import importlib.util
import io
import os
import re

import pytest

from app import create_app
from app.web import auth
from tests.helpers import ROOT

TOKEN = "s3cret-token"
GOOD = {"Authorization": f"Bearer {TOKEN}"}
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@pytest.fixture
def secured(app):
    app.config["API_TOKEN"] = TOKEN
    return app.test_client()


def operations(client):
    """(method, path with task_id 1, security) of every operation in /openapi.json."""
    spec = client.get("/openapi.json").get_json()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method != "parameters":
                security = op.get("security", spec["security"])
                yield method.upper(), re.sub(r"\{\w+\}", "1", path), security


def refused(response):
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    error = response.get_json()["error"]
    assert error["code"] == 401 and "token" in error["message"]


def test_every_secured_operation_needs_the_token(secured):
    ops = list(operations(secured))
    assert {"GET /healthz", "GET /", "GET /openapi.json"} == {
        f"{m} {p}" for m, p, security in ops if security == []
    }
    for method, path, security in ops:
        if security == []:
            # /healthz is 503 on the embedded broker with no worker running (none here)
            ok = (200, 503) if path == "/healthz" else (200,)
            assert secured.open(path, method=method).status_code in ok, path
            continue
        refused(secured.open(path, method=method))
        refused(secured.open(path, method=method, headers={"Authorization": "Bearer nope"}))
        refused(secured.open(path, method=method, headers={"Authorization": TOKEN}))
        refused(secured.open(path, method=method, headers={"Authorization": f"Basic {TOKEN}"}))
        answer = secured.open(path, method=method, headers=GOOD)
        assert answer.status_code != 401, (method, path)


def test_static_files_are_public(secured):
    for name in ("app.js", "app.css", "favicon.svg"):
        response = secured.get(f"/static/{name}")
        assert response.status_code == 200
        response.close()


def test_the_token_is_compared_in_constant_time(secured, monkeypatch):
    calls = []

    def compare(a, b):
        calls.append((a, b))
        return a == b

    monkeypatch.setattr(auth.hmac, "compare_digest", compare)
    assert secured.get("/tasks", headers={"Authorization": "bearer  " + TOKEN}).status_code == 200
    assert calls == [(TOKEN.encode(), TOKEN.encode())]


def test_no_token_set_means_no_check(client):
    assert client.get("/tasks").status_code == 200
    assert "WWW-Authenticate" not in client.get("/tasks").headers


def test_unknown_paths_and_methods_stay_404_and_405(secured):
    assert secured.get("/nowhere").status_code == 404
    response = secured.delete("/tasks")
    assert response.status_code == 405 and "GET" in response.headers["Allow"]
    assert response.get_json()["error"]["code"] == 405


def upload_task(client) -> int:
    data = {"file": (io.BytesIO(b"a,b\n1,2\n"), "x.csv")}
    response = client.post("/", data=data, content_type="multipart/form-data", headers=GOOD)
    assert response.status_code == 202
    return response.get_json()["id"]


def test_a_signed_link_opens_that_download_only(secured, monkeypatch):
    task_id = upload_task(secured)  # an import: its download is a 404, past the check
    other = upload_task(secured)
    refused(secured.post(f"/tasks/{task_id}/download_link"))
    link = secured.post(f"/tasks/{task_id}/download_link", headers=GOOD).get_json()
    assert link["expires_in"] == auth.LINK_SECONDS
    path, sig = re.fullmatch(r"(/tasks/\d+/download)\?sig=([\w.-]+)", link["url"]).groups()
    assert path == f"/tasks/{task_id}/download" and TOKEN not in link["url"]

    assert secured.get(link["url"]).status_code == 404  # accepted: the 404 is the view's
    refused(secured.get(path))
    refused(secured.get(f"{path}?sig={sig[:-2]}xx"))
    refused(secured.get(f"/tasks/{other}/download?sig={sig}"))
    refused(secured.get(f"/tasks/{task_id}?sig={sig}"))
    refused(secured.post(f"/terminate/{task_id}?sig={sig}"))
    assert secured.post("/tasks/999/download_link", headers=GOOD).status_code == 404

    monkeypatch.setattr(auth, "LINK_SECONDS", -1)  # every link is now past its age
    refused(secured.get(link["url"]))


def test_links_from_another_secret_are_refused(app, secured):
    task_id = upload_task(secured)
    url = secured.post(f"/tasks/{task_id}/download_link", headers=GOOD).get_json()["url"]
    app.config["SECRET_KEY"] = "another secret"
    refused(secured.get(url))


def test_security_headers_on_every_response(secured):
    responses = [
        secured.get("/"),
        secured.get("/static/app.js"),
        secured.get("/openapi.json"),
        secured.get("/healthz"),
        secured.get("/tasks"),  # 401
        secured.get("/tasks", headers=GOOD),
        secured.get("/tasks/999", headers=GOOD),  # 404
        secured.get("/nowhere"),
        secured.post("/", headers=GOOD),  # 400
    ]
    for response in responses:
        for name, value in HEADERS.items():
            assert response.headers[name] == value, (response.request.path, name)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        response.close()


def test_secret_key_comes_from_the_environment(stack, monkeypatch):
    for key, value in stack.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SECRET_KEY", "from-the-env")
    assert create_app().config["SECRET_KEY"] == "from-the-env"
    monkeypatch.delenv("SECRET_KEY")
    first, second = create_app().config["SECRET_KEY"], create_app().config["SECRET_KEY"]
    assert len(first) >= 32 and first != second  # random per start when unset


def load_gunicorn_conf():
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gunicorn_shares_one_secret_and_never_debugs(app, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "")  # unset ("" is unset); restored after the test
    load_gunicorn_conf()
    secret = os.environ["SECRET_KEY"]  # set in the master, before the workers fork
    assert len(secret) >= 32
    load_gunicorn_conf()
    assert os.environ["SECRET_KEY"] == secret  # kept, never replaced

    class Worker:
        wsgi = app

    app.debug = True
    load_gunicorn_conf().post_worker_init(Worker())
    assert app.debug is False
