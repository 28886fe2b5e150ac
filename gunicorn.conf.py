"""gunicorn settings for run.py and the Docker image; every value from the environment."""

import json
import os
import secrets
from pathlib import Path

from gunicorn import util

# One secret for every web worker: a link signed by one must verify in the others.
if not os.environ.get("SECRET_KEY"):
    os.environ["SECRET_KEY"] = secrets.token_hex(32)

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '5001')}"
workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 1)
# gthread: a worker's heartbeat does not depend on its requests, so a long
# upload is never killed by `timeout`.
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS") or 8)
timeout = 60
graceful_timeout = 30
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# gunicorn's control socket (gunicornc) lives in this instance's DATA_DIR, never in
# the user's home where every instance would share one (and the first to stop
# deletes it under the others). A Unix socket path is limited to 107 bytes: past
# that, this instance has none.
control_socket = str(Path(os.environ.get("DATA_DIR") or "instance").resolve() / "gunicorn.ctl")
control_socket_disable = len(control_socket.encode()) > 100


def on_starting(server):
    """Apply migrations once, before any web worker starts, in a child process: the
    master never imports the app, so it stays small and its exit quick."""
    import subprocess
    import sys

    code = "from app import create_app; from app.core.migrate import upgrade; upgrade(create_app())"
    subprocess.run([sys.executable, "-c", code], check=True)


def post_worker_init(worker):
    """Debug mode is never on under gunicorn, whatever FLASK_DEBUG says; the app's
    own log lines in LOG_FORMAT."""
    from app.logs import configure_logging

    worker.wsgi.debug = False
    configure_logging()


def json_error(sock, status_int, reason, mesg):
    """gunicorn's own refusals (a request line or headers too long, a malformed request)
    in the API's one error shape instead of an HTML page."""
    body = json.dumps({"error": {"code": status_int, "message": f"{reason}: {mesg}"}}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


util.write_error = json_error  # looked up at each call by gunicorn's workers


def worker_exit(server, worker):
    """Leave at once: the worker has closed its connections and answered its last
    request; the interpreter's final collection of the app's modules would take
    a second or more (several under load) for nothing."""
    import logging

    logging.shutdown()
    os._exit(0)
