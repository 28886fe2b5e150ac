"""Settings from the environment, read once when the app is built."""

import os
import secrets
from pathlib import Path


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _float(name: str, default: float | None) -> float | None:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def from_environment() -> dict:
    """Return the Flask config mapping built from environment variables."""
    data_dir = Path(os.environ.get("DATA_DIR", "instance")).resolve()
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
        # s3://bucket/prefix: uploads and exports in object storage (see app.core.storage),
        # reached with the standard AWS variables; unset: files under DATA_DIR.
        "STORAGE_URL": os.environ.get("STORAGE_URL", "").strip() or None,
        # Bytes per multipart part (S3 wants at least 5 MiB but the last).
        "STORAGE_PART_BYTES": _int("STORAGE_PART_BYTES", 8 << 20),
    }
