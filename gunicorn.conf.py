"""gunicorn settings for run.py and the Docker image; every value from the environment."""

import json
import os
import secrets

from gunicorn import util

from app.config import private_files
from app.web.auth import SECURITY_HEADERS

private_files()  # the master and its workers create files 0600, folders 0700

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


def on_starting(server):
    """Apply migrations once, before any web worker starts."""
    from app import create_app
    from app.core.migrate import upgrade

    upgrade(create_app())


def post_worker_init(worker):
    """Debug mode is never on under gunicorn, whatever FLASK_DEBUG says."""
    worker.wsgi.debug = False


def json_error(sock, status_int, reason, mesg):
    """gunicorn's own refusals (a request line or headers too long, a malformed request)
    in the API's one error shape, with the security headers, and without echoing the
    request: `mesg` quotes what the client sent, so only the fixed `reason` is shown."""
    body = json.dumps({"error": {"code": status_int, "message": str(reason)}}).encode()
    headers = {
        "Connection": "close",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Cache-Control": "no-store",
        **SECURITY_HEADERS,
    }
    head = f"HTTP/1.1 {status_int} {reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    util.write_nonblock(sock, (head + "\r\n").encode("latin-1") + body)


util.write_error = json_error  # looked up at each call by gunicorn's workers
