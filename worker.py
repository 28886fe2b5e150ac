"""Run a Celery worker on the configured broker: `python worker.py`.

Exposes `celery_app` (never a Flask object named `app`: `celery -A` picks `.app`).
"""

import os
import signal
import sys
import threading
import time

from app import config, create_app
from app.core import control
from app.core.migrate import upgrade

config.private_files()  # before create_app makes the folders
flask_app = create_app()
celery_app = flask_app.extensions["celery"]
control.install(flask_app)


def _watch_parent(pid: int) -> None:
    """Embedded mode: stop (at a checkpoint) when the process that started us is gone."""
    while os.getppid() == pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


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
        f"worker{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
    ]
    celery_app.worker_main(args + list(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()
