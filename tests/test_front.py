"""The nginx front (deploy/nginx.conf.template, as the image and compose run it):
slow clients cannot exhaust the app, uploads still stream, errors stay JSON.

The same scenario against gunicorn alone is expected to fail (strict xfail): that
is what shows the test can fail, and why the front is there.
"""

import shutil
import socket
import threading
import time

import pytest
import requests

from tests.helpers import Proc, free_port, need, wait_for

SLOW = "127.0.0.2"  # the slow client's address (all of 127/8 is this machine)
SLOW_CONNECTIONS = 200
DEADLINE_S = 20  # generous: a prompt answer takes milliseconds


@pytest.fixture
def front(live_server_factory, tmp_path):
    """`python run.py` behind `python deploy/nginx.py`: (nginx URL, gunicorn URL)."""
    need("nginx", shutil.which("nginx") is not None, "apt-get install nginx-light")
    app_base = live_server_factory(PROXY_HOPS="1", WEB_CONCURRENCY="2", WEB_THREADS="8")
    port = free_port()
    env = {
        "NGINX_LISTEN": f"127.0.0.1:{port}",
        "NGINX_UPSTREAM": app_base.split("//")[1],
        "NGINX_RUN_DIR": str(tmp_path / "nginx"),
    }
    proc = Proc.start(["deploy/nginx.py"], env, tmp_path / "nginx.log")
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return requests.get(f"{base}/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(up, 30, f"nginx at {base} ({proc.log})")
        yield base, app_base
    finally:
        proc.kill_group()


class SlowClient:
    """Many connections from one address that each send a request very slowly."""

    # Eight in ten never finish their headers, one trickles a JSON body, one an upload.
    KINDS = ["headers"] * 8 + ["json_body", "upload"]
    OPENING = {
        "headers": b"GET / HTTP/1.1\r\nHost: localhost\r\n",
        "json_body": b"POST /exports HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
        "upload": b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n",
    }
    DRIP = {"headers": b"X-a: b\r\n", "json_body": b" ", "upload": b"x"}

    def __init__(self, base: str, count: int):
        host, port = base.split("//")[1].split(":")
        self.target, self.socks, self.stop = (host, int(port)), [], threading.Event()
        for i in range(count):
            kind = self.KINDS[i % len(self.KINDS)]
            sock = socket.socket()
            sock.bind((SLOW, 0))
            sock.settimeout(5)
            try:
                sock.connect(self.target)
                sock.sendall(self.OPENING[kind])
            except OSError:
                sock.close()  # refused or reset already: the front shed it
                continue
            self.socks.append((sock, self.DRIP[kind]))
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _drip(self):
        while not self.stop.wait(1.0):
            for sock, piece in self.socks:
                try:
                    sock.send(piece)
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.thread.join()
        for sock, _ in self.socks:
            sock.close()


def upload_10mb(base: str) -> requests.Response:
    rows = b"".join(b"%08d,%s\n" % (i, b"x" * 80) for i in range(115_000))
    assert len(rows) > 10_000_000
    return requests.post(
        f"{base}/", files={"file": ("big.csv", b"n,text\n" + rows)}, timeout=DEADLINE_S * 3
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "through",
    [
        "nginx",
        pytest.param(
            "gunicorn",
            marks=pytest.mark.xfail(
                strict=True, raises=requests.RequestException, reason="no header deadline"
            ),
        ),
    ],
)
def test_slow_clients_leave_health_and_uploads_prompt(front, through):
    base = front[0] if through == "nginx" else front[1]
    slow = SlowClient(base, SLOW_CONNECTIONS)
    try:
        assert len(slow.socks) >= SLOW_CONNECTIONS * 0.9  # all held open, none shed yet
        time.sleep(2)  # let the drip reach the server: the slow requests are in
        health = requests.get(f"{base}/healthz", timeout=DEADLINE_S)
        assert health.status_code == 200, health.text
        answer = upload_10mb(base)
        assert answer.status_code == 202, answer.text
        task = requests.get(f"{base}/tasks/{answer.json()['id']}", timeout=DEADLINE_S).json()
        assert task["bytes_total"] > 10_000_000
    finally:
        slow.close()


def test_the_fronts_own_errors_are_json_with_the_security_headers(front):
    base = front[0]
    r = requests.get(f"{base}/healthz", headers={"X-Big": "x" * 40_000}, timeout=DEADLINE_S)
    assert r.status_code == 400 and r.json()["error"]["code"] == 400
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Server"] == "nginx"
    assert "x" * 100 not in r.text
    # A body over nginx's limit on a JSON path; an upload path leaves the limit to the app.
    r = requests.post(f"{base}/exports", data=b"{" * 2_000_000, timeout=DEADLINE_S)
    assert r.status_code == 413 and r.json()["error"]["code"] == 413
    # The app's own answers pass through untouched, forwarded address included.
    r = requests.get(f"{base}/tasks/999999", timeout=DEADLINE_S)
    assert r.status_code == 404 and "not found" in r.json()["error"]["message"]
    r = requests.post(f"{base}/pause/1", headers={"Origin": "http://evil.example"}, timeout=10)
    assert r.status_code == 403
    # Our own page through the front: Origin with the port it was served on.
    own = base.replace("127.0.0.1", "localhost")
    r = requests.post(f"{own}/pause/999999", headers={"Origin": own}, timeout=DEADLINE_S)
    assert r.status_code == 404, r.text
