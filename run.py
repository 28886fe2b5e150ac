"""Serve the app on HOST:PORT (gunicorn, settings in gunicorn.conf.py).

Without REDIS_URL it also runs an embedded worker on the filesystem broker in
DATA_DIR: a child process that dies with this one.
"""

import os
import subprocess
import sys
from pathlib import Path

from gunicorn.app.base import Application

from app import config
from app.config import private_files
from app.kinds.imports.parser import die_with_parent

HERE = Path(__file__).resolve().parent


class Server(Application):
    def init(self, parser, opts, args):
        return None

    def load_config(self):
        self.load_config_from_file(str(HERE / "gunicorn.conf.py"))

    def load(self):
        from app import create_app

        return create_app()


def start_embedded_worker() -> subprocess.Popen:
    env = {**os.environ, config.EMBEDDED_PARENT: str(os.getpid())}
    return subprocess.Popen(
        [sys.executable, str(HERE / "worker.py")], env=env, preexec_fn=die_with_parent
    )


def main() -> None:
    private_files()
    worker = None if config.from_environment()["REDIS_URL"] else start_embedded_worker()
    try:
        Server().run()
    finally:
        if worker is not None:
            worker.terminate()  # the worker stops at its next checkpoint
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()


if __name__ == "__main__":
    main()
