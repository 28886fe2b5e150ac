"""Serve the app on HOST:PORT: `python run.py` (what `make run` runs).

A small supervisor with two children: the web server (gunicorn, settings in
gunicorn.conf.py) and, without REDIS_URL, an embedded worker (`worker.py`) on the
filesystem broker in DATA_DIR. Neither is a child of the other, so each one's
exit status reaches this process intact (gunicorn's master reaps every child it
has). A worker that dies is started again with backoff and the reason is logged;
if it dies EMBEDDED_MAX_DEATHS (5) times within a minute, run.py stops the web
server and exits 1 rather than accept tasks no one would run. SIGTERM or SIGINT
stops both at once: idle, in about 2 s; busy, at the worker's next checkpoint.
Both children die with this process, even if it is SIGKILLed.
"""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from app import config
from app.kinds.imports.parser import die_with_parent
from app.logs import configure_logging

HERE = Path(__file__).resolve().parent
WEB = [sys.executable, "-m", "gunicorn", "-c", str(HERE / "gunicorn.conf.py"), "app:create_app()"]
WORKER = [sys.executable, str(HERE / "worker.py")]
log = logging.getLogger("run")


def describe_exit(code: int) -> str:
    """A process's exit status in words: 'exit code 3' or 'signal SIGKILL'."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def spawn(argv: list[str]) -> subprocess.Popen:
    # The worker stops at a checkpoint when this process is gone (worker.py).
    env = {**os.environ, config.EMBEDDED_PARENT: str(os.getpid())} if argv is WORKER else None
    return subprocess.Popen(argv, cwd=HERE, env=env, preexec_fn=die_with_parent)


class Restarts:
    """Backoff between restarts, and the verdict when a child keeps dying."""

    def __init__(self, max_deaths: int, window: float = 60.0):
        self.max_deaths, self.window = max_deaths, window
        self.deaths: list[float] = []
        self.delay = 0.5

    def died(self, now: float, lived: float) -> bool:
        """Record a death; True when it is one too many (give up)."""
        if lived > self.window:
            self.delay = 0.5  # it had been healthy: start again from a short wait
        self.deaths = [t for t in self.deaths if now - t < self.window] + [now]
        return len(self.deaths) >= self.max_deaths

    def next_delay(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, 8.0)
        return delay


def supervise(stop: threading.Event, embedded: bool, max_deaths: int) -> int:
    """Run the web server (and the embedded worker) until `stop` or a failure."""
    web = spawn(WEB)
    worker = spawn(WORKER) if embedded else None
    worker_started, restart_at = time.monotonic(), None
    restarts = Restarts(max_deaths)
    code = 0
    while not stop.wait(0.1):
        if web.poll() is not None:
            log.critical("web server (pid %d) stopped: %s", web.pid, describe_exit(web.returncode))
            code = web.returncode or 1
            break
        if worker is not None and worker.poll() is not None:
            now, why = time.monotonic(), describe_exit(worker.returncode)
            if restarts.died(now, now - worker_started):
                log.critical(
                    "embedded worker (pid %d) died of %s, %d times in %.0f s: giving up",
                    worker.pid,
                    why,
                    len(restarts.deaths),
                    restarts.window,
                )
                code = 1
                break
            delay = restarts.next_delay()
            log.error(
                "embedded worker (pid %d) died of %s; restarting in %.1f s", worker.pid, why, delay
            )
            worker, restart_at = None, now + delay
        if worker is None and restart_at is not None and time.monotonic() >= restart_at:
            worker, worker_started, restart_at = spawn(WORKER), time.monotonic(), None
    # Both stop side by side: the worker at its next checkpoint.
    for proc in (web, worker):
        if proc is not None and proc.poll() is None:
            proc.terminate()
    for proc in (web, worker):
        if proc is not None:
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return code


def main() -> None:
    configure_logging("run")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    config.private_files()  # files 0600, folders 0700, before anything is made
    settings = config.from_environment()
    code = supervise(stop, not settings["REDIS_URL"], settings["EMBEDDED_MAX_DEATHS"])
    # Both children are gone: skip the interpreter's final collection of the
    # modules imported on the way (a second or more of waiting on nothing).
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    main()
