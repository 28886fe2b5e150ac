"""gunicorn settings for run.py and the Docker image; the values from app/config.py."""

import json

from gunicorn import util

from app.config import server as server_settings  # not `config`: a gunicorn setting's name
from app.core import guards

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
    in the API's one error shape instead of an HTML page."""
    body = json.dumps({"error": {"code": status_int, "message": f"{reason}: {mesg}"}}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


guards.gunicorn_write_error()  # a private hook: refuse to start if gunicorn changed it
util.write_error = json_error  # looked up at each call by gunicorn's workers
