"""Schema by migrations, applied once at start under a lock (never create_all)."""

import fcntl
import os
from contextlib import contextmanager

from flask import Flask
from flask_migrate import upgrade as alembic_upgrade
from sqlalchemy import text

from app.core.models import db

PG_LOCK_KEY = 727_1001  # an arbitrary, fixed advisory-lock key


@contextmanager
def _lock(app: Flask):
    """Serialise migrations across processes: a file lock, or a PostgreSQL advisory lock."""
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
                conn.commit()
        return
    with open(os.path.join(app.config["DATA_DIR"], "migrate.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def upgrade(app: Flask) -> None:
    """Bring the database to the newest revision."""
    with app.app_context(), _lock(app):
        alembic_upgrade(directory=app.extensions["migrate"].directory)
