"""Self-healing: run.py keeps its embedded worker alive, health says when it is not,
and an idle stop is quick and clean. Real `python run.py` processes throughout."""

import os
import signal
from pathlib import Path

import pytest
import requests

from tests.helpers import RUNNING_SERVERS, wait_for, write_rows

ROWS = 6000


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def embedded_worker(base: str) -> int | None:
    """The pid of run.py's worker.py child, or None."""
    server = RUNNING_SERVERS[base].popen.pid
    pids = [p for p in children(server) if "worker.py" in cmdline(p)]
    return pids[0] if pids else None


def kill_worker(pid: int) -> None:
    """SIGKILL a worker and its pool processes at once, as a crash would."""
    for p in [pid, *children(pid)]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def health(base: str, query: str = "") -> tuple[int, dict]:
    r = requests.get(f"{base}/healthz{query}", timeout=10)
    return r.status_code, r.json()


def get(base: str, task_id: int) -> dict:
    return requests.get(f"{base}/tasks/{task_id}", timeout=10).json()


def upload(base: str, path: Path) -> int:
    with open(path, "rb") as f:
        r = requests.post(f"{base}/", files={"file": (path.name, f, "text/csv")}, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def entries(base: str, task_id: int) -> list[int]:
    rows, url = [], f"/csv_entries?task_id={task_id}&limit=1000"
    while url:
        page = requests.get(base + url, timeout=30).json()
        rows += [e["row_number"] for e in page["entries"]]
        url = page["next"]
    return rows


def test_killed_embedded_worker_is_restarted_and_the_import_completes_exactly(
    live_server_factory, tmp_path
):
    base = live_server_factory(
        IMPORT_MAX_ROWS_PER_S=1500, HEARTBEAT_TIMEOUT_S=3, IMPORT_BATCH_SIZE=200
    )
    task_id = upload(base, write_rows(tmp_path / "big.csv", ROWS))
    wait_for(lambda: get(base, task_id)["last_row"] >= 400, 60, "the import under way")
    first = embedded_worker(base)
    kill_worker(first)
    # Nobody steps in: run.py starts a new worker; its sweeper takes the task over.
    wait_for(
        lambda: (w := embedded_worker(base)) and w != first, 60, "run.py to restart the worker"
    )
    done = wait_for(
        lambda: (t := get(base, task_id))["status"] in ("COMPLETED", "FAILED") and t,
        180,
        "the import to finish",
        interval=0.5,
    )
    assert done["status"] == "COMPLETED", done
    assert done["rows_imported"] == ROWS and done["error_count"] == 0
    assert entries(base, task_id) == list(range(1, ROWS + 1))
    log = RUNNING_SERVERS[base].log.read_text(errors="replace")
    assert f"embedded worker (pid {first}) died of signal SIGKILL; restarting" in log


def test_healthz_is_503_while_no_worker_lives(live_server_factory):
    base = live_server_factory()
    assert health(base) == (200, {"database": "ok", "broker": "ok", "workers": 1})
    worker = embedded_worker(base)
    os.kill(worker, signal.SIGSTOP)  # alive to the kernel, dead to everyone else
    try:
        assert health(base) == (503, {"database": "ok", "broker": "ok", "workers": 0})
    finally:
        os.kill(worker, signal.SIGCONT)
    wait_for(lambda: health(base)[0] == 200, 30, "healthz 200 again")
    kill_worker(worker)
    # Until its successor answers, the node is down; then it is up again.
    code, body = wait_for(lambda: (h := health(base))[0] == 503 and h, 30, "healthz 503")
    assert body["workers"] == 0
    wait_for(lambda: health(base)[0] == 200, 90, "healthz 200 with the new worker")


def test_run_py_gives_up_on_a_worker_that_keeps_dying(live_server_factory):
    base = live_server_factory(EMBEDDED_MAX_DEATHS=2)
    server = RUNNING_SERVERS[base]
    first = embedded_worker(base)
    kill_worker(first)
    second = wait_for(
        lambda: (w := embedded_worker(base)) and w != first and w, 60, "the second worker"
    )
    kill_worker(second)
    assert server.popen.wait(timeout=120) == 1
    assert "times in 60 s: giving up" in server.log.read_text(errors="replace")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/healthz", timeout=5)


def test_idle_sigterm_stops_run_py_cleanly(live_server_factory, tmp_path):
    """The bound is generous; bench/stop.py measures the real figure (< 2 s)."""
    base = live_server_factory()
    server, worker = RUNNING_SERVERS[base], embedded_worker(base)
    assert (tmp_path / "live" / "gunicorn.ctl").is_socket()  # not one in $HOME for all
    server.signal(signal.SIGTERM)
    assert server.popen.wait(timeout=60) == 0
    assert not Path(f"/proc/{worker}").exists() or "Z" in Path(f"/proc/{worker}/stat").read_text()
    # Its control socket was in its own DATA_DIR, and is gone with it.
    assert not (tmp_path / "live" / "gunicorn.ctl").exists()
