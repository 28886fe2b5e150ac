"""Smaller leaks: gunicorn's own refusals, redirects, file modes, download caching."""

import socket
import stat
from pathlib import Path
from urllib.parse import urlsplit

import requests

from app.web.auth import SECURITY_HEADERS
from tests.helpers import wait_for

MARK = "<script>zzmarkzz</script>"


def raw_exchange(base: str, data: bytes) -> bytes:
    """Send bytes to the server, return all it answers before closing."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def parse(answer: bytes) -> tuple[int, dict, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


REFUSED = [
    (f"GET /{MARK * 400} HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
    (f"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: {MARK * 400}\r\n\r\n", 431),
    (f"{MARK} / HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    (f"GET /{MARK} HTTP/9.9\r\nHost: localhost\r\n\r\n", 400),
]


def test_gunicorn_refusals_carry_security_headers_and_echo_nothing(live_server):
    for request_text, code in REFUSED:
        status, headers, body = parse(raw_exchange(live_server, request_text.encode()))
        assert status in (code, 400), (status, body)
        for name, value in SECURITY_HEADERS.items():
            assert headers.get(name) == value, (name, headers)
        assert headers["Content-Type"] == "application/json"
        assert b"zzmarkzz" not in body and b"script" not in body
        assert b'"error"' in body


def test_data_files_are_private_and_downloads_are_never_stored(live_server_factory, tmp_path):
    base = live_server_factory()
    data = tmp_path / "live"
    csv = b"name,amount\n" + b"".join(b"n%d,%d\n" % (i, i) for i in range(50))
    r = requests.post(f"{base}/", files={"file": ("a.csv", csv)}, timeout=30)
    assert r.status_code == 202, r.text
    imported = r.json()["id"]
    done = lambda i: requests.get(f"{base}/tasks/{i}", timeout=10).json()["status"] == "COMPLETED"  # noqa: E731
    wait_for(lambda: done(imported), 60, "the import to complete")
    r = requests.post(f"{base}/exports", json={"task_id": imported}, timeout=30)
    assert r.status_code == 202, r.text
    export = r.json()["id"]
    wait_for(lambda: done(export), 60, "the export to complete")
    r = requests.get(f"{base}/tasks/{export}/download", timeout=30)
    assert r.status_code == 200 and r.content.startswith(b'"name","amount"')
    assert r.headers["Cache-Control"] == "no-store"

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    files = [data / "app.db", *(data / "exports").iterdir()]
    assert files[1:], "the export's file"
    for path in files:
        assert mode(path) == 0o600, (path, oct(mode(path)))
    for folder in (data, data / "uploads", data / "exports", data / "broker"):
        assert mode(folder) == 0o700, (folder, oct(mode(folder)))


def test_redirects_never_take_their_host_from_the_request(app, client):
    app.config["ALLOWED_HOSTS"] = ["localhost", "rebound.example"]
    for host in ("localhost", "rebound.example:8080"):
        r = client.get("/tasks//1", headers={"Host": host})
        assert r.status_code == 308
        assert r.headers["Location"] == "/tasks/1", r.headers["Location"]
    r = client.get("//tasks//1?x=1", headers={"Host": "rebound.example"})
    location = r.headers.get("Location", "/")
    assert not location.startswith("//") and "rebound" not in location
