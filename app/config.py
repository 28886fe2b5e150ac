"""Settings from the environment: the one module that reads them.

`from_environment()` is the Flask config; `server()` is gunicorn's (gunicorn.conf.py);
`embedded_parent()` is the pid a worker started by run.py watches.
"""

import os
import secrets
from pathlib import Path

# Data files 0600 and folders 0700: uploads, exports and the database are the users'.
PRIVATE_UMASK = 0o077


def private_files() -> None:
    """Set the process umask so every file the service creates is its own alone."""
    os.umask(PRIVATE_UMASK)


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _float(name: str, default: float | None) -> float | None:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def allowed_hosts(value: str | None, bound: str) -> list[str]:
    """ALLOWED_HOSTS as lower-case names (IPv6 in brackets); default: local names + HOST."""
    names = value.split(",") if value and value.strip() else ["localhost", "127.0.0.1", "[::1]"]
    names = [n.strip().lower() for n in names if n.strip()]
    if not (value and value.strip()) and bound:
        names.append(bound.strip().lower())
    return [f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names]


def _data_dir() -> Path:
    return Path(os.environ.get("DATA_DIR") or "instance").resolve()


def from_environment() -> dict:
    """Return the Flask config mapping built from environment variables."""
    data_dir = _data_dir()
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{data_dir / 'app.db'}"
    cores = os.cpu_count() or 1
    return {
        "DATA_DIR": str(data_dir),
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": os.environ.get("REDIS_URL") or None,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_hex(32),
        "API_TOKEN": os.environ.get("API_TOKEN") or None,
        "MAX_CONTENT_LENGTH": _int("MAX_UPLOAD_MB", 1024) * 1024 * 1024,
        "MAX_FIELD_KB": _int("MAX_FIELD_KB", 128),
        # Rows per batch; batches are also cut at 20 ms of parsing. SQLite: 2,000
        # rows, ~4 ms holding the one write lock. PostgreSQL: 10,000, since each
        # COPY and commit has a fixed cost and other writers are not held up
        # (a pause does not wait for a batch either: see Store.commit).
        "IMPORT_BATCH_SIZE": _int(
            "IMPORT_BATCH_SIZE", 10_000 if database_url.startswith("postgresql") else 2000
        ),
        "IMPORT_BATCH_SECONDS": _float("IMPORT_BATCH_SECONDS", 0.02),
        "IMPORT_MAX_ROWS_PER_S": _float("IMPORT_MAX_ROWS_PER_S", None),
        "IMPORT_BATCH_LOG": os.environ.get("IMPORT_BATCH_LOG", "") not in ("", "0"),
        "HEARTBEAT_TIMEOUT_S": _float("HEARTBEAT_TIMEOUT_S", 30.0),
        "SWEEP_INTERVAL_S": _float("SWEEP_INTERVAL_S", 5.0),
        "WORKER_CONCURRENCY": _int("WORKER_CONCURRENCY", cores),
        "WEB_CONCURRENCY": _int("WEB_CONCURRENCY", cores),
        "LOG_LEVEL": (os.environ.get("LOG_LEVEL") or "INFO").upper(),
        # An upload file untouched this long may be an orphan (uploads.remove_orphans).
        "UPLOAD_PART_MAX_AGE_S": _float("UPLOAD_PART_MAX_AGE_S", 60.0),
        # The control thread looks for rollbacks this often, and at once when woken.
        "CONTROL_POLL_S": _float("CONTROL_POLL_S", 0.2),
        "ALLOWED_HOSTS": allowed_hosts(
            os.environ.get("ALLOWED_HOSTS"), os.environ.get("HOST", "127.0.0.1")
        ),
        # Proxies in front whose X-Forwarded-For/-Proto are believed (nginx: 1).
        "PROXY_HOPS": _int("PROXY_HOPS", 0),
        # Per client (see app/web/limits.py): unsafe requests, and unfinished tasks.
        "RATE_LIMIT": os.environ.get("RATE_LIMIT", "30/second;1200/minute").strip(),
        "MAX_ACTIVE_TASKS_PER_CLIENT": _int("MAX_ACTIVE_TASKS_PER_CLIENT", 10),
        # Bounded work per request: an export's columns, a list page's bytes.
        "EXPORT_MAX_COLUMNS": _int("EXPORT_MAX_COLUMNS", 2000),
        "PAGE_MAX_BYTES": _int("PAGE_MAX_BYTES", 1024 * 1024),
        # A finished export's file is removed this long after it completed (410 then).
        "EXPORT_TTL_HOURS": _float("EXPORT_TTL_HOURS", 24.0),
        # run.py gives up on an embedded worker that dies this often in a minute.
        "EMBEDDED_MAX_DEATHS": _int("EMBEDDED_MAX_DEATHS", 5),
        "METRICS_PUBLIC": os.environ.get("METRICS_PUBLIC", "") not in ("", "0"),
        "WORKER_METRICS_PORT": _int("WORKER_METRICS_PORT", 0) or None,
        # s3://bucket/prefix: uploads and exports in object storage (see app.core.storage),
        # reached with the standard AWS variables; unset: files under DATA_DIR.
        "STORAGE_URL": os.environ.get("STORAGE_URL", "").strip() or None,
        # Bytes per multipart part (S3 wants at least 5 MiB but the last).
        "STORAGE_PART_BYTES": _int("STORAGE_PART_BYTES", 8 << 20),
    }


def server() -> dict:
    """gunicorn's settings (gunicorn.conf.py), with one SECRET_KEY for every web worker.

    A SECRET_KEY made here goes into the environment before the workers fork, so a
    link signed by one worker verifies in the others.
    """
    if not os.environ.get("SECRET_KEY"):
        os.environ["SECRET_KEY"] = secrets.token_hex(32)
    host, port = os.environ.get("HOST") or "127.0.0.1", os.environ.get("PORT") or "5001"
    return {
        "bind": f"{host}:{port}",
        "workers": _int("WEB_CONCURRENCY", os.cpu_count() or 1),
        "threads": _int("WEB_THREADS", 8),
        "accesslog": os.environ.get("ACCESS_LOG") or None,
        "loglevel": (os.environ.get("LOG_LEVEL") or "info").lower(),
        "control_socket": str(_data_dir() / "gunicorn.ctl"),
    }


EMBEDDED_PARENT = "EMBEDDED_PARENT_PID"  # set by run.py for the worker it starts


def embedded_parent() -> int | None:
    """The pid of the run.py that started this worker, or None for a standalone worker."""
    return _int(EMBEDDED_PARENT, 0) or None


METRICS_FOLDER = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable


def metrics_folder() -> str | None:
    """The worker's private multiprocess metrics folder (worker.py sets it), or None."""
    return os.environ.get(METRICS_FOLDER) or None


def log_settings() -> tuple[str, str]:
    """(LOG_FORMAT, LOG_LEVEL): "text" or "json", and the root logger's level."""
    fmt = (os.environ.get("LOG_FORMAT") or "text").strip().lower()
    return fmt, (os.environ.get("LOG_LEVEL") or "INFO").upper()


def s3_endpoint() -> tuple[str | None, str | None]:
    """The standard AWS endpoint variables (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3"), os.environ.get("AWS_ENDPOINT_URL")
