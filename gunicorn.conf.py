"""gunicorn settings for run.py and the Docker image; every value from the environment."""

import os
import secrets

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
# A long query gets the API's JSON 400, not gunicorn's HTML 414 at 4 KB (0 means
# gunicorn's ceiling, 1 MiB: small beside the uploads it already accepts).
limit_request_line = 0
graceful_timeout = 30
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


def on_starting(server):
    """Apply migrations once, before any web worker starts."""
    from app import create_app
    from app.schema import upgrade

    upgrade(create_app())


def post_worker_init(worker):
    """Debug mode is never on under gunicorn, whatever FLASK_DEBUG says."""
    worker.wsgi.debug = False
