"""Migrations: the newest revision is the models, and 0003 keeps every imported row."""

import flask_migrate
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from app import create_app
from app.core.migrate import upgrade
from app.core.models import db


def test_migrations_build_exactly_the_models(app):
    with app.app_context(), db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert diff == []


def test_entries_rekeyed_without_losing_rows(stack, monkeypatch):
    """0003 drops csv_entries.id for the key (task_id, row_number); down and up keep rows."""
    for key, value in stack.items():
        monkeypatch.setenv(key, value)
    app = create_app({"TESTING": True})
    directory = app.extensions["migrate"].directory
    rows = [(t, n, f'["t{t}", "r{n}"]') for t in (5, 2) for n in (3, 1, 2)]
    insert = text("INSERT INTO csv_entries (task_id, row_number, data) VALUES (:t, :n, :d)")
    read = text("SELECT task_id, row_number, data FROM csv_entries ORDER BY task_id, row_number")
    with app.app_context():
        flask_migrate.upgrade(directory=directory, revision="0002")
        with db.engine.begin() as conn:
            conn.execute(insert, [{"t": t, "n": n, "d": d} for t, n, d in rows])
        assert "id" in {c["name"] for c in inspect(db.engine).get_columns("csv_entries")}
    upgrade(app)
    with app.app_context():
        assert {c["name"] for c in inspect(db.engine).get_columns("csv_entries")} == {
            "task_id",
            "row_number",
            "data",
        }
        key = inspect(db.engine).get_pk_constraint("csv_entries")["constrained_columns"]
        assert key == ["task_id", "row_number"]
        with db.engine.connect() as conn:
            assert conn.execute(read).all() == sorted(rows)
        flask_migrate.downgrade(directory=directory, revision="0002")
        with db.engine.connect() as conn:
            assert conn.execute(read).all() == sorted(rows)
        flask_migrate.upgrade(directory=directory)
        with db.engine.begin() as conn:
            assert conn.execute(read).all() == sorted(rows)
            conn.execute(insert, {"t": 5, "n": 4, "d": "[]"})
        db.engine.dispose()
