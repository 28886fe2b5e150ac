"""Production packaging, exercised without a Docker engine.

Static checks: the Dockerfile passes hadolint, docker-compose accepts the compose file
and it has the shape the deployment needs, the build context keeps what the image runs.

Live checks: supervisord started with the project's own ``supervisord.conf`` (as the
image's default command does) serves the API through gunicorn and runs a Celery worker on
a real Redis; an import is paused, resumed and terminated over HTTP; the worker is stopped
with ``supervisorctl`` in the middle of an import and started again, and the rows come out
exact; a 200 MB upload streams through gunicorn.

Redis: ``REDIS_URL`` if set (else 127.0.0.1:6379), always database 9, flushed at start.
Missing Redis or a missing tool skips with a reason, except under CI=true, where it fails.
"""

from __future__ import annotations

import configparser
import fnmatch
import io
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow  # the full tier: the packaged service, run for real

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CI = os.environ.get("CI", "").lower() == "true"
CONF = ROOT / "supervisord.conf"
REDIS_DB = 9  # without REDIS_URL only: else the database REDIS_URL names (see redis_url)
THROTTLE = 2000  # IMPORT_MAX_ROWS_PER_S for the stack: imports last long enough to act on

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def unavailable(reason: str):
    """Skip with a reason; under CI=true nothing may skip, so fail instead."""
    if CI:
        pytest.fail(f"{reason} (CI=true: not skipping)")
    pytest.skip(reason)


def tool(name: str) -> str:
    path = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        unavailable(f"{name} is not installed")
    return path


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = predicate()
        except (requests.ConnectionError, requests.Timeout, sqlite3.OperationalError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            what = what() if callable(what) else what
            pytest.fail(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


# --------------------------------------------------------------------------- static


def test_hadolint_finds_nothing():
    hadolint = tool("hadolint")
    out = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def test_dockerfile_contract():
    ins = dockerfile_instructions()
    froms = [arg for kw, arg in ins if kw == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms), froms
    final = max(i for i, (kw, _) in enumerate(ins) if kw == "FROM")
    runtime = ins[final:]
    kinds = [kw for kw, _ in runtime]
    assert ("EXPOSE", "5001") in runtime
    assert any(kw == "VOLUME" and "/data" in arg for kw, arg in runtime)
    users = [arg for kw, arg in runtime if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    health = [arg for kw, arg in runtime if kw == "HEALTHCHECK"]
    assert health and "/healthz" in health[0] and "urllib" in health[0]
    cmd = [arg for kw, arg in runtime if kw == "CMD"]
    assert cmd and "supervisord" in cmd[-1] and "supervisord.conf" in cmd[-1], cmd
    # Test tooling never reaches the image.
    assert "requirements-dev" not in (ROOT / "Dockerfile").read_text()
    # The dependencies layer comes from requirements.txt alone, before the code.
    copies = [(i, arg) for i, (kw, arg) in enumerate(ins) if kw == "COPY"]
    req = next(i for i, arg in copies if arg.startswith("requirements.txt"))
    code = next(i for i, arg in copies if arg.split()[0] == ".")
    assert req < code
    assert kinds.index("USER") > kinds.index("COPY")
    # Every variable supervisord.conf expands must have a default in the image,
    # or supervisord refuses to start there.
    settings = "\n".join(
        line for line in CONF.read_text().splitlines() if not line.lstrip().startswith(";")
    )
    needed = set(re.findall(r"%\(ENV_(\w+)\)s", settings))
    env_text = " ".join(arg for kw, arg in runtime if kw == "ENV")
    defined = set(re.findall(r"(\w+)=", env_text))
    assert needed and needed <= defined, needed - defined
    assert {"DATA_DIR", "HOST", "PORT"} <= defined
    assert re.search(r"\bDATA_DIR=/data\b", env_text) and re.search(
        r"\bHOST=0\.0\.0\.0\b", env_text
    )


def dockerignored(path: str) -> bool:
    """Docker's .dockerignore matching, enough for plain patterns (no '!')."""
    patterns = [
        p.strip().rstrip("/")
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        pattern = pattern.lstrip("/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern) or (
                pattern.startswith("**/")
                and fnmatch.fnmatchcase(prefix.split("/")[-1], pattern[3:])
            ):
                return True
    return False


def test_dockerignore_keeps_what_the_image_runs():
    for kept in (
        "app/__init__.py",
        "migrations/env.py",
        "gunicorn.conf.py",
        "deploy/nginx.py",
        "deploy/nginx.conf.template",
        "worker.py",
        "supervisord.conf",
        "requirements.txt",
    ):
        assert not dockerignored(kept), kept
    for dropped in (
        ".git/HEAD",
        ".venv/bin/python",
        ".env",
        "instance/app.db",
        "tests/test_packaging.py",
        "app/__pycache__/x.cpython-311.pyc",
        "sample_data/generated/big.csv",
    ):
        assert dockerignored(dropped), dropped


def compose(*args: str, env: dict | None = None) -> str:
    exe = tool("docker-compose")
    full_env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "COMPOSE_PROFILES")
    }
    full_env.update(env or {})
    out = subprocess.run(
        [exe, "-f", "docker-compose.yml", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=full_env,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def load_yaml(text: str):
    try:
        import yaml
    except ImportError:
        unavailable("PyYAML is not installed (requirements-dev.txt)")
    return yaml.safe_load(text)


def seconds(duration: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)(ms|us|h|m|s)", duration):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    return total


def supervisor_program(program: str):
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
    parser.read(CONF)
    return parser[f"program:{program}"]


def stopwaitsecs(program: str) -> float:
    return float(supervisor_program(program)["stopwaitsecs"])


def test_compose_config_is_valid_and_scalable():
    compose("config", "-q")
    compose("--profile", "postgres", "config", "-q")
    url = "postgresql+psycopg://csv:csv@postgres:5432/csv"
    config = load_yaml(compose("config", env={"DATABASE_URL": url}))
    services = config["services"]
    assert {"redis", "web", "worker", "postgres"} <= set(services)
    assert services["postgres"].get("profiles") == ["postgres"]
    assert "healthcheck" in services["redis"]
    web, worker = services["web"], services["worker"]
    assert web["image"] == worker["image"] and web.get("build") and worker.get("build")
    assert "gunicorn" in web["command"] and "worker.py" in worker["command"]
    # --scale worker=N: nothing that must be unique per container.
    assert not worker.get("ports") and "container_name" not in worker
    assert not any("container_name" in s for s in services.values())
    for svc in (web, worker):
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc["environment"]["DATA_DIR"] == "/data"
        assert svc["environment"]["DATABASE_URL"] == url
        assert svc["environment"]["REDIS_URL"].startswith("redis://redis:")
        mounts = [v for v in svc["volumes"] if str(v).split(":")[1:2] == ["/data"]]
        assert mounts and str(mounts[0]).split(":")[0] in config["volumes"], svc["volumes"]
        assert seconds(svc["stop_grace_period"]) > stopwaitsecs("worker")
    assert web["volumes"] == worker["volumes"]
    # nginx is the front, the only published port; web is reached through it only,
    # believes its one hop, and answers to its own service name.
    front = services["nginx"]
    assert "deploy/nginx.py" in front["command"] and front["image"] == web["image"]
    assert front["environment"]["NGINX_UPSTREAM"] == "web:5001"
    assert front["ports"]
    # The image's VOLUME /data: a mount of nginx's own, or each new nginx container
    # leaves an anonymous volume behind after `down`.
    assert front.get("tmpfs") or any(
        str(v).split(":")[1:2] == ["/data"] for v in front.get("volumes", [])
    )
    assert not web.get("ports")
    assert str(web["environment"]["PROXY_HOPS"]) == "1"
    assert "web" in web["environment"]["ALLOWED_HOSTS"].split(",")
    # The image's health check probes HTTP, which only the web service serves.
    assert worker["healthcheck"].get("disable") or worker["healthcheck"].get("test") == ["NONE"]
    # Without DATABASE_URL the containers fall back to SQLite in DATA_DIR.
    plain = load_yaml(compose("config"))["services"]["web"]["environment"]
    assert not plain.get("DATABASE_URL")
    assert not plain.get("STORAGE_URL")  # files in DATA_DIR unless object storage is asked for


def test_compose_minio_profile_is_valid_and_wired_to_the_app():
    """The `minio` profile, checked statically (no MinIO server runs here)."""
    compose("--profile", "minio", "config", "-q")
    env = {
        "STORAGE_URL": "s3://csv/data",
        "AWS_ENDPOINT_URL_S3": "http://minio:9000",
        "AWS_ACCESS_KEY_ID": "key-id",
        "AWS_SECRET_ACCESS_KEY": "secret-key",
    }
    services = load_yaml(compose("--profile", "minio", "config", env=env))["services"]
    minio, bucket = services["minio"], services["minio-bucket"]
    assert minio["image"].startswith("minio/minio") and minio["profiles"] == ["minio"]
    assert bucket["profiles"] == ["minio"] and "mc mb" in " ".join(bucket["entrypoint"])
    assert bucket["depends_on"]["minio"]["condition"] == "service_healthy"
    assert (
        minio["environment"]["MINIO_ROOT_USER"],
        minio["environment"]["MINIO_ROOT_PASSWORD"],
    ) == (
        "key-id",
        "secret-key",
    )
    assert bucket["environment"]["BUCKET"] == "csv"  # the bucket STORAGE_URL names
    # mc reaches MinIO where the app does (AWS_ENDPOINT_URL_S3), as its root user.
    mc_host = bucket["environment"]["MC_HOST_local"]
    assert mc_host == "http://key-id:secret-key@minio:9000", mc_host
    assert "--address" not in minio["command"]  # MinIO's default, :9000
    assert any(str(v).split(":")[1:2] == ["/data"] for v in minio["volumes"])
    for name in ("web", "worker"):
        app_env = services[name]["environment"]
        for key, value in env.items():
            assert app_env[key] == value, (name, key)
        assert app_env["AWS_REGION"]
    # The app never waits for MinIO: plain compose (and `make run`) needs none.
    for name in ("web", "worker"):
        assert set(services[name]["depends_on"]) == {"redis"}


def test_compose_metrics_profile_scrapes_web_and_workers():
    compose("--profile", "metrics", "config", "-q")
    services = load_yaml(compose("--profile", "metrics", "config"))["services"]
    prom = services["prometheus"]
    assert prom["profiles"] == ["metrics"]
    mounts = [  # Compose v2 gives mappings, docker-compose 1.29 "source:target:ro"
        (v["source"], v["target"], v.get("read_only"))
        if isinstance(v, dict)
        else (v.split(":")[0], v.split(":")[1], v.endswith(":ro"))
        for v in prom["volumes"]
    ]
    assert (str(ROOT / "deploy" / "prometheus.yml"), "/etc/prometheus/prometheus.yml", True) in [
        (str(Path(src)), dst, bool(ro)) for src, dst, ro in mounts
    ]
    config = load_yaml((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # web publishes nothing (nginx does) and sets no PORT: it listens on the image's.
    assert "PORT" not in services["web"]["environment"] and not services["web"].get("ports")
    web_port = re.search(r"\bPORT=(\d+)", (ROOT / "Dockerfile").read_text()).group(1)
    assert jobs["taskctl-web"]["static_configs"][0]["targets"] == [f"web:{web_port}"]
    assert services["nginx"]["environment"]["NGINX_UPSTREAM"] == f"web:{web_port}"
    worker_port = int(services["worker"]["environment"]["WORKER_METRICS_PORT"])
    sd = jobs["taskctl-worker"]["dns_sd_configs"][0]
    assert (sd["names"], sd["type"], sd["port"]) == (["worker"], "A", worker_port)
    for job in jobs.values():
        assert job["metrics_path"] == "/metrics"


def test_worker_node_names_differ_where_pid_and_host_are_the_same(tmp_path):
    """Containers on the host's network share its name, and each one's worker may be
    pid 7: two names asked in one process (one pid, one host) must still differ, or
    two workers answer a ping as one (/healthz counts one, control replies merge)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    code = "import os, worker; print(os.getpid(), worker.node_name(), worker.node_name())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "DATA_DIR": str(tmp_path / "data")},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    pid, *names = out.stdout.split()
    assert names[0] != names[1], names
    assert all(re.fullmatch(rf"worker{pid}-[0-9a-f]+@%h", n) for n in names), names


# --------------------------------------------------------------------------- live stack


def redis_url() -> str:
    """The Redis database the stack's broker uses, flushed: REDIS_URL's own, which no other
    suite on the machine uses (a fixed number let two suites take each other's tasks)."""
    url = os.environ.get("REDIS_URL") or f"redis://127.0.0.1:6379/{REDIS_DB}"
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis is not answering at {url}: {exc}")
    client.flushdb()
    client.close()
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """supervisord + gunicorn + worker, started from the project's supervisord.conf."""

    def __init__(self, tmp: Path):
        self.data = tmp / "data"
        self.data.mkdir()
        # A short path: a unix socket path must fit in 108 bytes.
        self.run_dir = Path(tempfile.mkdtemp(prefix="sv-"))
        self.log_path = tmp / "supervisord.log"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "API_TOKEN", "HEARTBEAT_TIMEOUT_S", "IMPORT_BATCH_SIZE")
        }
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            SUPERVISOR_RUN_DIR=str(self.run_dir),
            DATA_DIR=str(self.data),
            REDIS_URL=redis_url(),
            HOST="127.0.0.1",
            PORT=str(self.port),  # nginx, the front
            APP_PORT=str(free_port()),  # gunicorn behind it
            WEB_CONCURRENCY="2",
            WORKER_CONCURRENCY="2",
            IMPORT_MAX_ROWS_PER_S=str(THROTTLE),
        )
        self.env = env
        self.http = requests.Session()
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "supervisord"), "-c", str(CONF)],
            cwd=self.run_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pgids: set[int] = set()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ctl(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(CONF), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert out.returncode == 0, f"supervisorctl {args}: {out.stdout}{out.stderr}"
        return out.stdout

    def pid(self, program: str) -> int:
        pid = int(self.ctl("pid", program).strip())
        if pid:
            self.pgids.add(os.getpgid(pid))
        return pid

    def url(self, path: str) -> str:
        return self.base + path

    def healthy(self):
        if self.proc.poll() is not None:
            pytest.fail(f"supervisord exited ({self.proc.returncode}):\n{self.log_text()[-4000:]}")
        r = self.http.get(self.url("/healthz"), timeout=5)
        return r.status_code == 200 and r.json().get("workers", 0) >= 1 and r

    def upload(self, path: Path, **fields) -> dict:
        with open(path, "rb") as f:
            r = self.http.post(
                self.url("/"), files={"file": (path.name, f, "text/csv")}, data=fields, timeout=60
            )
        assert r.status_code == 202, r.text
        task = r.json()
        assert r.headers["Location"].endswith(f"/tasks/{task['id']}")
        return task

    def task(self, task_id) -> dict:
        r = self.http.get(self.url(f"/tasks/{task_id}"), timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def action(self, name: str, task_id) -> requests.Response:
        return self.http.post(self.url(f"/{name}/{task_id}"), timeout=30)

    def wait_status(self, task_id, *statuses: str, timeout: float = 60) -> dict:
        seen = {}

        def check():
            t = seen["task"] = self.task(task_id)
            if t["status"] == "FAILED" and "FAILED" not in statuses:
                pytest.fail(f"task failed: {t}")
            return t if t["status"] in statuses else None

        return wait_for(check, timeout, lambda: f"task {task_id} to be {statuses} ({seen})")

    def wait_rows(self, task_id, at_least: int, timeout: float = 60) -> dict:
        def check():
            t = self.task(task_id)
            return t if t["last_row"] >= at_least and t["status"] == "PROCESSING" else None

        return wait_for(check, timeout, f"task {task_id} to import {at_least} rows")

    def counts(self, task_id) -> tuple[int, int]:
        """(rows, distinct row numbers) of a task, straight from the SQLite file."""
        db = sqlite3.connect(self.data / "app.db", timeout=30)
        try:
            return db.execute(
                "SELECT count(*), count(DISTINCT row_number) FROM csv_entries WHERE task_id = ?",
                (task_id,),
            ).fetchone()
        finally:
            db.close()

    def stop(self):
        try:
            if self.proc.poll() is None:
                for program in ("web", "worker"):
                    try:
                        self.pid(program)
                    except (AssertionError, ValueError, OSError):
                        pass
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=150)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            left = []
            for pgid in self.pgids:
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    continue
                left.append(pgid)
                os.killpg(pgid, signal.SIGKILL)
            self.log.close()
            self.http.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)
            assert not left, f"process groups outlived supervisord: {left}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tool("nginx")  # the image's front, under the same supervisord
    stack = Stack(tmp_path_factory.mktemp("stack"))
    try:
        wait_for(stack.healthy, 90, "GET /healthz to answer 200 with a worker", interval=0.25)
        wait_for(
            lambda: (
                len(re.findall(r"^(web|worker)\s+RUNNING", stack.ctl("status", check=False), re.M))
                == 2
            ),
            30,
            "supervisord to report web and worker RUNNING (startsecs)",
            interval=0.25,
        )
        yield stack
    except BaseException:
        sys.stderr.write(stack.log_text()[-6000:])
        raise
    finally:
        stack.stop()


@pytest.fixture
def csv_file(tmp_path):
    from sample_data.generate import write_csv

    def make(rows: int, name: str = "rows.csv") -> Path:
        return Path(write_csv(tmp_path / name, rows))

    return make


@pytest.mark.timeout(180)
def test_supervisord_serves_the_api_through_gunicorn(stack):
    r = stack.http.get(stack.url("/healthz"), timeout=10)
    assert r.status_code == 200
    assert r.json()["database"] == "ok" and r.json()["broker"] == "ok"
    assert r.headers.get("Server") == "nginx"  # the front answers; gunicorn is behind it
    status = stack.ctl("status")
    assert re.search(r"^web\s+RUNNING", status, re.M) and re.search(
        r"^worker\s+RUNNING", status, re.M
    )
    # gthread workers (a long upload is not killed by gunicorn's worker timeout), with the
    # bind and counts from the environment: ask the very command supervisord runs.
    command = shlex.split(supervisor_program("web")["command"])
    program_env = supervisor_program("web")["environment"]
    assert 'PORT="%(ENV_APP_PORT)s"' in program_env and 'HOST="127.0.0.1"' in program_env
    printed = subprocess.run(
        [*command, "--print-config"],
        cwd=ROOT,
        env={**stack.env, "HOST": "127.0.0.1", "PORT": stack.env["APP_PORT"]},
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    config = dict(re.findall(r"^(\w+)\s+= (.*)$", printed, re.M))
    assert config["worker_class"] == "gthread", printed
    assert config["bind"] == f"['127.0.0.1:{stack.env['APP_PORT']}']" and config["workers"] == "2"
    assert re.search(r"^nginx\s+RUNNING", status, re.M)
    # supervisord's log and the programs' output all reach its stdout (the container log).
    log = stack.log_text()
    assert "success: web entered RUNNING state" in log and "Starting gunicorn" in log
    assert re.search(r"\S+@\S+ ready\.", log)
    assert stack.http.get(stack.url("/tasks"), timeout=10).status_code == 200


@pytest.mark.timeout(240)
def test_pause_resume_and_terminate_over_http(stack, csv_file):
    rows = 8 * THROTTLE  # about 8 s of importing
    task = stack.upload(csv_file(rows))
    tid = task["id"]
    stack.wait_rows(tid, 1)

    assert stack.action("pause", tid).status_code == 202
    paused = stack.wait_status(tid, "PAUSED", timeout=30)
    n, distinct = stack.counts(tid)
    assert (
        0 < paused["last_row"] < rows
        and n == distinct == paused["rows_imported"] == paused["last_row"]
    )
    r = stack.http.get(stack.url("/paused_tasks"), timeout=10)
    assert any(str(t.get("id", t.get("task_id"))) == str(tid) for t in r.json()["tasks"]), r.text
    assert stack.action("pause", tid).status_code == 200  # already paused

    assert stack.action("resume", tid).status_code == 202
    done = stack.wait_status(tid, "COMPLETED", timeout=60)
    assert done["rows_imported"] == rows and done["progress"] == 1
    assert stack.counts(tid) == (rows, rows)

    # Terminate rolls back even a finished import ...
    assert stack.action("terminate", tid).status_code == 202
    stack.wait_status(tid, "REVOKED", timeout=60)
    assert stack.counts(tid) == (0, 0)
    r = stack.action("resume", tid)
    assert r.status_code == 409 and r.json()["error"]["status"] == "REVOKED"

    # ... and a running one.
    other = stack.upload(csv_file(rows, "other.csv"))["id"]
    stack.wait_rows(other, 1)
    assert stack.action("terminate", other).status_code == 202
    stack.wait_status(other, "REVOKED", timeout=60)
    assert stack.counts(other) == (0, 0)


@pytest.mark.timeout(300)
def test_supervisorctl_stop_worker_mid_import_then_start_loses_nothing(stack, csv_file):
    rows = 10 * THROTTLE
    tid = stack.upload(csv_file(rows))["id"]
    stack.wait_rows(tid, THROTTLE)
    old_pid = stack.pid("worker")

    log_start = len(stack.log_text())
    started = time.monotonic()
    stack.ctl("stop", "worker")  # SIGTERM to the worker's process group, as `docker stop` does
    took = time.monotonic() - started
    assert re.search(r"^worker\s+STOPPED", stack.ctl("status", check=False), re.M)
    with pytest.raises(ProcessLookupError):
        os.kill(old_pid, 0)
    # The worker stopped its import at a checkpoint, handed the task back and exited
    # cleanly: supervisord did not have to kill it, no pool process died mid-batch, and
    # the task is queued again at once (not left to the sweeper's heartbeat timeout).
    stop_log = stack.log_text()[log_start:]
    assert took < stopwaitsecs("worker"), took
    assert "stopped: worker (exit status 0)" in stop_log, stop_log[-3000:]
    assert "WorkerLostError" not in stop_log, stop_log[-3000:]
    at_stop = stack.task(tid)
    assert at_stop["status"] == "QUEUED" and 0 < at_stop["last_row"] < rows, at_stop
    # Nothing half-written is visible, and nothing is written while no worker runs.
    n, distinct = stack.counts(tid)
    assert n == distinct == at_stop["rows_imported"] == at_stop["last_row"]

    stack.ctl("start", "worker")
    assert stack.pid("worker") not in (0, old_pid)
    done = stack.wait_status(tid, "COMPLETED", timeout=120)
    assert done["rows_imported"] == rows and done["last_row"] == rows and done["error_count"] == 0
    assert stack.counts(tid) == (rows, rows)

    assert stack.action("terminate", tid).status_code == 202
    stack.wait_status(tid, "REVOKED", timeout=60)


class MultipartFile:
    """A multipart/form-data body read from disk piece by piece, with a known length.

    requests sends an object with ``__iter__`` and ``__len__`` as a streamed body with a
    Content-Length, so the file is never held in memory (``files=`` would build the whole
    body in memory first).
    """

    def __init__(self, path: Path, field: str = "file", chunk: int = 1 << 20):
        boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={boundary}"
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{path.name}"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        self._length = len(head) + path.stat().st_size + len(tail)
        self._parts = [io.BytesIO(head), open(path, "rb"), io.BytesIO(tail)]
        self._chunk = chunk

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._chunk
        while self._parts:
            data = self._parts[0].read(size)
            if data:
                return data
            self._parts.pop(0).close()
        return b""

    def __iter__(self):
        while data := self.read(self._chunk):
            yield data

    def close(self):
        for part in self._parts:
            part.close()


@pytest.mark.timeout(420)
def test_200_mb_upload_streams_through_gunicorn(stack, csv_file):
    path = csv_file(1_150_000, "big.csv")
    size = path.stat().st_size
    assert size >= 200 * 1024 * 1024, size

    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    body = MultipartFile(path)
    try:
        started = time.monotonic()
        r = stack.http.post(
            stack.url("/"),
            data=body,
            headers={"Content-Type": body.content_type},
            timeout=(10, 300),
        )
        took = time.monotonic() - started
    finally:
        body.close()
    assert r.status_code == 202, r.text[:2000]
    task = r.json()
    assert task["bytes_total"] == size, task
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grew < 64 * 1024, f"the test client's peak memory grew by {grew} KiB"
    sys.stderr.write(f"200 MB upload accepted in {took:.1f} s\n")

    tid = task["id"]
    assert stack.action("terminate", tid).status_code in (200, 202)
    stack.wait_status(tid, "REVOKED", timeout=120)
    assert stack.counts(tid) == (0, 0)

    # The upload is removed with its task.
    def no_big_file():
        return not [p for p in stack.data.rglob("*") if p.is_file() and p.stat().st_size >= size]

    wait_for(no_big_file, 30, "the 200 MB upload to be removed from DATA_DIR")
