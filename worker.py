"""Run a Celery worker on the configured broker: `python worker.py`.

Exposes `celery_app` (never a Flask object named `app`: `celery -A` picks `.app`).
"""

import os
import secrets
import signal
import sys
import tempfile
import threading
import time

from app import config  # reads no library: safe before prometheus_client

# WORKER_METRICS_PORT: this worker's pool processes write their metrics to a folder
# of its own, set before prometheus_client is first imported (it reads it then).
if config.from_environment()["WORKER_METRICS_PORT"]:
    os.environ.update({config.METRICS_FOLDER: tempfile.mkdtemp(prefix="taskctl-metrics-")})

from celery import signals  # noqa: E402

from app import create_app, metrics  # noqa: E402
from app.core import control  # noqa: E402
from app.core.migrate import upgrade  # noqa: E402
from app.logs import configure_logging  # noqa: E402

config.private_files()  # before create_app makes the folders
flask_app = create_app()
celery_app = flask_app.extensions["celery"]
# Before control.install: its worker_shutdown handler ends the process.
signals.worker_shutdown.connect(lambda **_: metrics.remove_worker_folder(), weak=False)
control.install(flask_app)


@signals.worker_ready.connect
def _serve_metrics(**_):
    port = flask_app.config["WORKER_METRICS_PORT"]
    if port:
        metrics.serve_worker(port)


@signals.setup_logging.connect
def _logging(**_):
    """Our handler and format (LOG_FORMAT, task context) instead of Celery's."""
    configure_logging()


def _watch_parent(pid: int) -> None:
    """Embedded mode: stop (at a checkpoint) when the process that started us is gone."""
    while os.getppid() == pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def node_name() -> str:
    """This worker's Celery node name, unique even where pids and host names repeat.

    Containers on the host's network share its name, and each container's worker
    may well be pid 7: a random suffix keeps two workers from answering as one
    (the /healthz count, Celery's control replies are keyed by node name).
    """
    return f"worker{os.getpid()}-{secrets.token_hex(3)}@%h"


def main(argv: list[str] | None = None) -> None:
    parent = config.embedded_parent()
    if parent:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    upgrade(flask_app)
    concurrency = str(flask_app.config["WORKER_CONCURRENCY"])
    args = [
        "worker",
        "--loglevel",
        flask_app.config["LOG_LEVEL"],
        "--concurrency",
        concurrency,
        "--hostname",
        node_name(),
        "--without-gossip",
        "--without-mingle",
    ]
    celery_app.worker_main(args + list(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()
