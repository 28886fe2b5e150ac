"""The production stack built and run for real with Docker, as the README's Deploy says.

The image is built from the project's Dockerfile (``docker build --network host``) and
run two ways: by docker-compose from the project's ``docker-compose.yml``, once per case
in ``CASES`` (the default stack, the ``postgres`` profile), and alone, as
``docker run ... csv-importer`` with web and worker under supervisord. What running on a
CI machine requires is in one file, ``tests/compose/docker-compose.ci.yml``, which says
why: host networking, loopback listeners on free ports (the machine's own Redis and
PostgreSQL keep 6379 and 5432), a tag of the test's own for the image, a 2 s health
check interval. docker-compose 1.29 refuses ``ports`` with ``network_mode: host``, so the
merged config is written with ``docker-compose config`` and ``ports`` removed from it.

Base images: CI reaches no image registry, so ``scripts/ci/docker-standins.sh`` (run by
``.ci/run``) makes stand-ins with debootstrap, tagged ``python:3.11-slim``,
``redis:7-alpine`` and ``postgres:16-alpine``. The postgres stand-in is Debian's
PostgreSQL 15 behind an entrypoint that honours POSTGRES_USER, POSTGRES_PASSWORD and
POSTGRES_DB like the official image's: this test needs a PostgreSQL server set up the
official way, not version 16 itself.

Every case gets the same checks: healthy (``/healthz`` and the image's HEALTHCHECK),
processes unprivileged, an import paused, resumed and exact, a worker stopped mid-import
handing its task back to a started one, ``--scale worker=2`` running two imports at once,
``down`` then ``up`` keeping the data. Adding a profile (a front proxy, metrics, object
storage) is one more ``Case``: its profile, its settings, the override's entries for its
services, and any checks of its own in ``extra``.

Everything the tests make (containers, volumes, the image) is removed at the end; the
base images and the dependency layers of the build stay, as build cache. Without a Docker
daemon the tests skip with a reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml

from tests.helpers import ROOT, free_port, need, wait_for
from tests.s3 import bucket_env, s3_client
from tests.test_exports import assert_same_rows, source_rows

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1800)]

OVERRIDE = ROOT / "tests" / "compose" / "docker-compose.ci.yml"
UID = "10001"  # the Dockerfile's unprivileged user
ROWS = 60_000
RATE = 6_000  # IMPORT_MAX_ROWS_PER_S: an import lasts ROWS / RATE = 10 s, time to act on
BASE_IMAGES = ("python:3.11-slim", "redis:7-alpine", "postgres:16-alpine")

# Counted inside the web container, with the database the app itself uses.
COUNT_ROWS = """
import os, sys
from sqlalchemy import create_engine, text
url = os.environ.get("DATABASE_URL") or "sqlite:////data/app.db"
with create_engine(url).connect() as c:
    print(*c.execute(text(
        "SELECT count(*), count(DISTINCT row_number), min(row_number), max(row_number)"
        " FROM csv_entries WHERE task_id = :t"), {"t": int(sys.argv[1])}).one())
"""


def run(*argv: str, env: dict | None = None, timeout: float = 300, check=True) -> str:
    out = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )
    if check and out.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {out.returncode}:\n{out.stdout}{out.stderr}")
    return out.stdout


# The docker CLI: $DOCKER if set (.ci/run names Debian's, the daemon's own, which has
# BuildKit built in; a newer CLI without the buildx plugin only has the legacy builder).
DOCKER = os.environ.get("DOCKER") or "docker"


def docker(*args: str, **kw) -> str:
    return run(DOCKER, *args, **kw)


def daemon_answers() -> bool:
    try:
        return subprocess.run([DOCKER, "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# --- the image ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image():
    """The project's image, built as users build it (plus host networking for pip)."""
    need("docker", bool(shutil.which(DOCKER)), "install docker.io (.ci/run does)")
    need("docker-compose", bool(shutil.which("docker-compose")), "install docker-compose")
    need("a Docker daemon", daemon_answers(), "start dockerd (scripts/ci/docker-standins.sh)")
    missing = [i for i in BASE_IMAGES if not docker("images", "-q", i).strip()]
    need("base images", not missing, f"{missing}: run scripts/ci/docker-standins.sh")
    tag = f"csv-importer:ci-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    # BuildKit: the legacy builder makes a container for every step, which on the vfs
    # storage driver is a full copy of the file system. The build stage's layers (the
    # pinned dependencies) stay cached between runs, keyed by requirements.txt.
    docker(
        "build",
        "--network",
        "host",
        "-t",
        tag,
        ".",
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        timeout=1500,
    )
    print(f"docker build: {time.monotonic() - started:.0f} s")
    try:
        yield tag
    finally:
        docker("rmi", "-f", tag, check=False)


# --- a deployment: what the checks need from a compose stack or a single container ----


class Api:
    """The service's HTTP API on loopback."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.http = requests.Session()

    def health(self):
        try:
            r = self.http.get(self.base + "/healthz", timeout=10)
        except (requests.ConnectionError, requests.Timeout):
            return None  # not up yet, or slow on a loaded machine: asked again
        return r.json() if r.status_code == 200 else None

    def upload(self, path: Path) -> int:
        with open(path, "rb") as f:
            r = self.http.post(self.base + "/", files={"file": (path.name, f)}, timeout=120)
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def task(self, task_id: int) -> dict:
        r = self.http.get(f"{self.base}/tasks/{task_id}", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def act(self, action: str, task_id: int) -> None:
        r = self.http.post(f"{self.base}/{action}/{task_id}", timeout=30)
        assert r.status_code == 202, r.text

    def wait(self, task_id: int, *statuses: str, timeout: float = 120) -> dict:
        def reached():
            t = self.task(task_id)
            assert t["status"] != "FAILED" or "FAILED" in statuses, t
            return t if t["status"] in statuses else None

        return wait_for(reached, timeout, f"task {task_id} to be {statuses}", interval=0.2)

    def export(self, **body) -> int:
        r = self.http.post(self.base + "/exports", json=body, timeout=30)
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def download(self, task_id: int) -> str:
        r = self.http.get(f"{self.base}/tasks/{task_id}/download", timeout=120)
        assert r.status_code == 200, r.text[:500]
        return r.content.decode("utf-8")

    def wait_rows(self, task_id: int, rows: int = 1, timeout: float = 120) -> dict:
        def going():
            t = self.task(task_id)
            assert t["status"] not in ("FAILED", "COMPLETED"), t
            return t if t["status"] == "PROCESSING" and t["last_row"] >= rows else None

        return wait_for(going, timeout, f"task {task_id} to import {rows} rows", interval=0.1)


class Deployment:
    """What the checks use: the API, containers, SQL in the web container."""

    api: Api

    def containers(self, service: str) -> list[str]:
        raise NotImplementedError

    def exec(self, service: str, *argv: str) -> str:
        return docker("exec", self.containers(service)[0], *argv)

    def counts(self, task_id: int) -> tuple[int, ...]:
        """(rows, distinct row numbers, first, last) of a task, from the app's database."""
        out = self.exec("web", "python", "-c", COUNT_ROWS, str(task_id))
        return tuple(int(x) for x in out.split())

    def health_status(self, service: str = "web") -> str:
        return docker("inspect", "-f", "{{.State.Health.Status}}", self.containers(service)[0])

    # Services whose HEALTHCHECK (the image's) must say healthy.
    checked = ("web",)

    def wait_healthy(self, workers: int = 1, timeout: float = 180) -> dict:
        def ok():
            h = self.api.health()
            good = h and h["database"] == h["broker"] == "ok" and h["workers"] == workers
            statuses = {self.health_status(s).strip() for s in self.checked}
            return good and statuses == {"healthy"} and h

        return wait_for(
            ok, timeout, f"/healthz with {workers} worker(s) and HEALTHCHECK healthy", interval=0.5
        )


# The services of the default stack: what `up` starts where a profile's own service
# has no image on a CI machine (Prometheus, MinIO), which is then checked statically.
APP_SERVICES = ["redis", "web", "worker", "nginx"]


@dataclass
class Case:
    """One way of running the compose stack: profiles, settings, the checks it runs."""

    name: str
    # The checks this case runs (each test below names its own with a `check` mark);
    # the others are deselected (tests/conftest.py): every check costs imports, every
    # case minutes on vfs.
    checks: set[str]
    profiles: list[str] = field(default_factory=list)
    # Settings from the shell, as the README has users export them; {postgres_port}
    # and friends are filled in with the ports the test picked.
    env: dict[str, str] = field(default_factory=dict)
    # Services to start (and wait healthy) before the app, as the README says.
    first: list[str] = field(default_factory=list)
    # What `up` starts; every service of the profiles when empty.
    services: list[str] = field(default_factory=list)
    # STORAGE_URL and the AWS settings on a fresh bucket of moto's S3 server (on
    # loopback, started by the test), standing in for the `minio` profile's MinIO.
    s3: bool = False


CASES = [
    Case(
        "default",
        {"healthy", "unprivileged", "pause", "stop", "metrics", "scale", "down_up"},
    ),
    Case(
        "postgres",
        {"healthy", "down_up"},
        profiles=["postgres"],
        env={"DATABASE_URL": "postgresql+psycopg://csv:csv@127.0.0.1:{postgres_port}/csv"},
        first=["postgres"],
    ),
    Case("minio", {"healthy", "export"}, profiles=["minio"], services=APP_SERVICES, s3=True),
]


class Stack(Deployment):
    """docker-compose.yml + the CI override, merged, under a project name of its own."""

    checked = ("web", "nginx")

    def __init__(self, case: Case, image: str, workdir: Path, settings: dict):
        self.case = case
        self.project = f"taskctl{uuid.uuid4().hex[:8]}"
        names = ("web", "app", "redis", "postgres", "worker_metrics")
        ports = {f"{name}_port": free_port() for name in names}
        self.ports = ports
        # The web port is nginx's, where users reach the service: every check goes
        # through the front; the app's own port is web's (gunicorn's) behind it.
        self.api = Api(ports["web_port"])
        # Only what the README's commands see from a user's shell, plus the CI values.
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            **({"DOCKER_HOST": os.environ["DOCKER_HOST"]} if "DOCKER_HOST" in os.environ else {}),
            # On the vfs storage driver creating a container copies its image: minutes
            # for PostgreSQL's on a loaded machine, past docker-compose's 60 s default.
            "COMPOSE_HTTP_TIMEOUT": "600",
            "CI_IMAGE": image,
            "CI_WEB_PORT": str(ports["web_port"]),
            "CI_APP_PORT": str(ports["app_port"]),
            "CI_WORKER_METRICS_PORT": str(ports["worker_metrics_port"]),
            "CI_REDIS_PORT": str(ports["redis_port"]),
            "CI_POSTGRES_PORT": str(ports["postgres_port"]),
            "IMPORT_MAX_ROWS_PER_S": str(RATE),
            "WORKER_CONCURRENCY": "1",  # two imports at once need two workers
            "WEB_CONCURRENCY": "2",
            "HEARTBEAT_TIMEOUT_S": "30",
            **{k: v.format(**ports) for k, v in case.env.items()},
            **settings,
        }
        merged = yaml.safe_load(
            self.compose_raw("-f", "docker-compose.yml", "-f", str(OVERRIDE), "config")
        )
        for service in merged["services"].values():
            service.pop("ports", None)  # see the override's header
        self.file = workdir / "docker-compose.yml"
        self.volumes = set(docker("volume", "ls", "-q").split())
        self.file.write_text(yaml.safe_dump(merged, sort_keys=False))

    def compose_raw(self, *args: str, timeout: float = 300, check=True) -> str:
        profiles = [a for p in self.case.profiles for a in ("--profile", p)]
        return run(
            "docker-compose",
            "-p",
            self.project,
            *profiles,
            *args,
            env=self.env,
            timeout=timeout,
            check=check,
        )

    def compose(self, *args: str, **kw) -> str:
        return self.compose_raw("-f", str(self.file), *args, **kw)

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).split()

    def up(self, *args: str) -> None:
        for service in self.case.first:
            self.compose("up", "-d", service)
            wait_for(
                lambda s=service: self.health_status(s).strip() == "healthy",
                120,
                f"{service} healthy",
                interval=0.5,
            )
        self.compose("up", "-d", *(args or self.case.services))

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "60", check=False)

    def remove(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "30", check=False)
        label = f"label=com.docker.compose.project={self.project}"
        left = docker("ps", "-aq", "--filter", label).split()
        left += docker("volume", "ls", "-q", "--filter", label).split()
        # Anonymous volumes (the image's /data where a service mounts nothing) have
        # no project label: any volume new since the start was made by the stack.
        left += sorted(set(docker("volume", "ls", "-q").split()) - self.volumes)
        assert not left, f"left behind: {left}"


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def compose(request, image, tmp_path_factory):
    case = request.param
    with contextlib.ExitStack() as cleanup:
        settings = cleanup.enter_context(bucket_env("compose")) if case.s3 else {}
        yield from running(Stack(case, image, tmp_path_factory.mktemp(case.name), settings))


def running(stack: Stack):
    started = time.monotonic()
    try:
        stack.up()
        stack.wait_healthy()
        print(f"{stack.case.name}: up and healthy in {time.monotonic() - started:.0f} s")
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.remove()


@pytest.fixture(scope="module")
def csv_rows(tmp_path_factory) -> Path:
    from sample_data.generate import write_csv

    return Path(write_csv(tmp_path_factory.mktemp("csv") / "rows.csv", ROWS))


def assert_exact(d: Deployment, task_id: int, rows: int = ROWS) -> None:
    task = d.api.wait(task_id, "COMPLETED")
    assert (task["rows_imported"], task["error_count"]) == (rows, 0), task
    assert d.counts(task_id) == (rows, rows, 1, rows)


def assert_unprivileged(d: Deployment, service: str) -> None:
    for cid in d.containers(service):
        top = docker("top", cid, "-eo", "pid,uid,args").splitlines()[1:]
        assert top, f"{service}: no processes"
        assert all(line.split()[1] == UID for line in top), f"{service} runs as:\n{top}"


# --- the checks, each for the cases that list it -------------------------------------


@pytest.mark.check("healthy")
def test_healthy_with_the_images_healthcheck(compose):
    assert compose.api.health() == {"database": "ok", "broker": "ok", "workers": 1}
    assert (
        compose.health_status("web").strip() == compose.health_status("nginx").strip() == "healthy"
    )
    logs = compose.compose("logs", "--no-color", "web", "worker", "nginx")
    assert "Permission denied" not in logs, logs  # e.g. a file in an unwritable home


@pytest.mark.check("unprivileged")
def test_processes_run_unprivileged(compose):
    for service in ("web", "worker", "nginx"):
        assert_unprivileged(compose, service)


@pytest.mark.check("pause")
def test_import_paused_resumed_exact(compose, csv_rows):
    task_id = compose.api.upload(csv_rows)
    compose.api.wait_rows(task_id)
    compose.api.act("pause", task_id)
    paused = compose.api.wait(task_id, "PAUSED")
    assert 0 < paused["last_row"] < ROWS, paused
    time.sleep(1)
    assert compose.api.task(task_id)["last_row"] == paused["last_row"], "moved while paused"
    compose.api.act("resume", task_id)
    assert_exact(compose, task_id)


@pytest.mark.check("stop")
def test_stopped_worker_hands_its_task_back(compose, csv_rows):
    task_id = compose.api.upload(csv_rows)
    compose.api.wait_rows(task_id)
    started = time.monotonic()
    compose.compose("stop", "worker")
    stopped_in = time.monotonic() - started
    task = compose.api.task(task_id)
    assert task["status"] == "QUEUED" and 0 < task["last_row"] < ROWS, task
    assert stopped_in < 30, f"docker-compose stop worker took {stopped_in:.1f} s"
    compose.compose("start", "worker")
    assert_exact(compose, task_id)


def scrape(url: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of a Prometheus text page."""
    from prometheus_client.parser import text_string_to_metric_families

    r = requests.get(url, timeout=10)
    assert r.status_code == 200, r.text[:500]
    families = text_string_to_metric_families(r.text)
    return {(x.name, tuple(sorted(x.labels.items()))): x.value for f in families for x in f.samples}


@pytest.mark.check("metrics")
def test_metrics_count_a_finished_import_exactly(compose, csv_rows):
    """The `metrics` profile's two scrape targets, scraped by the test itself.

    No Prometheus image is on a CI machine, so the test stands in for Prometheus: it
    scrapes what deploy/prometheus.yml names, the web's /metrics (here through nginx,
    as users reach it) and a worker's WORKER_METRICS_PORT. The profile's Prometheus
    service and that file are checked statically (tests/test_packaging.py).
    """
    rows, commits = (
        ("taskctl_rows_total", (("kind", "import"),)),
        ("taskctl_batch_commit_seconds_count", ()),
    )
    worker = f"http://127.0.0.1:{compose.ports['worker_metrics_port']}/metrics"
    before, worker_before = scrape(compose.api.base + "/metrics"), scrape(worker)
    task_id = compose.api.upload(csv_rows)
    assert_exact(compose, task_id)
    after = scrape(compose.api.base + "/metrics")
    assert after[rows] - before.get(rows, 0) == ROWS
    assert after[("taskctl_workers", ())] == 1
    assert scrape(worker)[commits] > worker_before.get(commits, 0)


@pytest.mark.check("scale")
def test_two_workers_run_two_imports_at_once(compose, csv_rows):
    compose.compose("up", "-d", "--scale", "worker=2", "worker")
    # Two: on the host's network both containers have its name, and both workers
    # may be pid 7 in theirs; worker.py's node names differ all the same.
    compose.wait_healthy(workers=2)
    assert len(compose.containers("worker")) == 2
    a, b = compose.api.upload(csv_rows), compose.api.upload(csv_rows)

    # WORKER_CONCURRENCY=1: two imports PROCESSING at once are on two workers.
    def both():
        return all(compose.api.task(t)["status"] == "PROCESSING" for t in (a, b))

    wait_for(both, 60, "both imports PROCESSING at once", interval=0.1)
    for t in (a, b):
        assert_exact(compose, t)
    names = []
    for cid in compose.containers("worker"):
        logs = docker("logs", cid, check=False)
        assert "run_task" in logs, f"worker {cid} ran nothing"
        # The latest node name (a container's log keeps its earlier runs' too).
        names += re.findall(r"\bworker\d+(?:-[0-9a-f]+)?@[\w.-]+", logs)[-1:]
    assert len(set(names)) == 2, names  # Celery's control replies are keyed by name
    compose.compose("up", "-d", "--scale", "worker=1", "worker")


@pytest.mark.check("down_up")
def test_down_and_up_keep_the_data(compose, csv_rows):
    task_id = compose.api.upload(csv_rows)
    assert_exact(compose, task_id)
    compose.compose("down", "--timeout", "30")
    assert not compose.containers("web")
    compose.up()
    compose.wait_healthy()
    assert compose.api.task(task_id)["status"] == "COMPLETED"
    assert compose.counts(task_id) == (ROWS, ROWS, 1, ROWS)


@pytest.mark.check("export")
def test_import_and_export_through_object_storage(compose, csv_rows):
    """The `minio` profile's settings, with moto's S3 server standing in for MinIO.

    No MinIO image is on a CI machine: the profile's services are checked statically
    (tests/test_packaging.py), and the app's services run with STORAGE_URL on a bucket
    of moto's server, started by the test on loopback (tests/s3.py).
    """
    task_id = compose.api.upload(csv_rows)
    assert_exact(compose, task_id)
    export_id = compose.api.export(task_id=task_id, raw=True)
    done = compose.api.wait(export_id, "COMPLETED")
    assert done["rows_imported"] == ROWS, done
    got = csv.reader(io.StringIO(compose.api.download(export_id), newline=""))
    header, rows = source_rows(csv_rows)
    assert next(got) == header
    assert assert_same_rows(got, rows) == ROWS
    bucket, _, prefix = compose.env["STORAGE_URL"][len("s3://") :].partition("/")
    key = f"{prefix}/exports/{export_id}.csv"
    found = s3_client().list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
    assert [o["Key"] for o in found] == [key], "the export is not in the object storage"


# --- the single image under supervisord -----------------------------------------------


class Single(Deployment):
    """`docker run ... csv-importer` (nginx, web, worker under supervisord), with a Redis."""

    def __init__(self, image: str):
        self.name = f"taskctl{uuid.uuid4().hex[:8]}"
        web_port, app_port, redis_port = free_port(), free_port(), free_port()
        self.api = Api(web_port)
        self.redis = docker(
            "run",
            "-d",
            "--name",
            f"{self.name}-redis",
            "--network",
            "host",
            "redis:7-alpine",
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(redis_port),
        ).strip()
        # As the README's `docker run`, on the host network: -p means nothing there.
        self.cid = docker(
            "run",
            "-d",
            "--name",
            self.name,
            "--network",
            "host",
            "--health-interval",
            "2s",
            "-v",
            f"{self.name}-data:/data",
            "-e",
            "HOST=127.0.0.1",
            "-e",
            f"PORT={web_port}",  # nginx's; gunicorn's behind it is APP_PORT
            "-e",
            f"APP_PORT={app_port}",
            "-e",
            f"REDIS_URL=redis://127.0.0.1:{redis_port}/0",
            "-e",
            "WEB_CONCURRENCY=1",
            "-e",
            "WORKER_CONCURRENCY=1",
            image,
        ).strip()

    def containers(self, service: str) -> list[str]:
        return [self.cid]

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.cid, self.redis, check=False)
        docker("volume", "rm", f"{self.name}-data", check=False)


@pytest.fixture(scope="module")
def single(image):
    single = Single(image)
    try:
        single.wait_healthy()
        yield single
    except BaseException:
        print(docker("logs", "--tail", "60", single.cid, check=False))
        raise
    finally:
        single.remove()


def test_single_container_runs_its_programs_under_supervisord(single, csv_rows):
    def all_running():  # supervisord says RUNNING once a program has lasted startsecs
        status = single.exec("web", "supervisorctl", "status")
        return all(re.search(rf"^{p}\s+RUNNING", status, re.M) for p in ("nginx", "web", "worker"))

    wait_for(all_running, 60, "supervisord to report nginx, web and worker RUNNING", interval=0.5)
    assert_unprivileged(single, "web")
    task_id = single.api.upload(csv_rows)
    assert_exact(single, task_id)
    info = json.loads(docker("inspect", single.cid))[0]
    assert info["Config"]["User"].split(":")[0] == UID
