"""gunicorn settings for run.py and the Docker image; the values from app/config.py."""

import json
import os

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

# gunicorn's control socket (gunicornc) lives in this instance's DATA_DIR, never in
# the user's home where every instance would share one (and the first to stop
# deletes it under the others). A Unix socket path is limited to 107 bytes: past
# that, this instance has none.
control_socket = settings["control_socket"]
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


def worker_exit(server, worker):
    """Leave at once: the worker has closed its connections and answered its last
    request; the interpreter's final collection of the app's modules would take
    a second or more (several under load) for nothing."""
    import logging

    logging.shutdown()
    os._exit(0)
