"""gunicorn settings for run.py and the Docker image; the values from app/config.py."""

import json

from gunicorn import util

from app.config import private_files
from app.config import server as server_settings  # not `config`: a gunicorn setting's name
from app.core import guards
from app.web.auth import SECURITY_HEADERS

private_files()  # the master and its workers create files 0600, folders 0700

settings = server_settings()  # also shares one SECRET_KEY between the web workers
bind = settings["bind"]
workers = settings["workers"]
# gthread: a worker's heartbeat does not depend on its requests, so a long
# upload is never killed by `timeout`.
worker_class = "gthread"
threads = settings["threads"]
timeout = 60
graceful_timeout = 30
accesslog = settings["accesslog"]
errorlog = "-"
loglevel = settings["loglevel"]


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


guards.gunicorn_write_error()  # a private hook: refuse to start if gunicorn changed it
util.write_error = json_error  # looked up at each call by gunicorn's workers
