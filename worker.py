"""Run a Celery worker on the configured broker: `python worker.py`.

Exposes `celery_app` (never a Flask object named `app`: `celery -A` picks `.app`).
"""

import os
import signal
import sys
import threading
import time

from celery import signals

from app import create_app
from app.core import control
from app.core.migrate import upgrade
from app.logs import configure_logging

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
control.install(flask_app)


@signals.setup_logging.connect
def _logging(**_):
    """Our handler and format (LOG_FORMAT, task context) instead of Celery's."""
    configure_logging()


def _watch_parent(pid: int) -> None:
    """Embedded mode: stop (at a checkpoint) when the process that started us is gone."""
    while os.getppid() == pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    parent = os.environ.get("EMBEDDED_PARENT_PID")
    if parent:
        threading.Thread(target=_watch_parent, args=(int(parent),), daemon=True).start()
    upgrade(flask_app)
    concurrency = str(flask_app.config["WORKER_CONCURRENCY"])
    args = [
        "worker",
        "--loglevel",
        os.environ.get("LOG_LEVEL", "INFO"),
        "--concurrency",
        concurrency,
        "--hostname",
        f"worker{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
    ]
    celery_app.worker_main(args + list(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()
