"""csv_entries keyed by (task_id, row_number): no surrogate id, one index

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    # A new table, rows copied over: SQLite cannot change a table's key in place,
    # and on PostgreSQL a dropped column stays in every row written after it
    # (a null to store and skip: measurably slower COPY).
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute(
        "CREATE TABLE csv_entries_new (task_id INTEGER NOT NULL, "
        "row_number BIGINT NOT NULL, data TEXT NOT NULL, "
        "CONSTRAINT pk_csv_entries_new PRIMARY KEY (task_id, row_number))"
        + (" WITHOUT ROWID" if sqlite else "")
    )
    op.execute(
        "INSERT INTO csv_entries_new (task_id, row_number, data) "
        "SELECT task_id, row_number, data FROM csv_entries"
    )
    op.execute("DROP TABLE csv_entries")
    op.execute("ALTER TABLE csv_entries_new RENAME TO csv_entries")
    if not sqlite:  # SQLite's key has no name of its own; PostgreSQL's is the index
        op.execute("ALTER TABLE csv_entries RENAME CONSTRAINT pk_csv_entries_new TO pk_csv_entries")


def downgrade():
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TABLE csv_entries_old (id INTEGER NOT NULL, task_id INTEGER NOT NULL, "
            "row_number BIGINT NOT NULL, data TEXT NOT NULL, "
            "CONSTRAINT pk_csv_entries PRIMARY KEY (id), "
            "CONSTRAINT uq_csv_entries_task_id UNIQUE (task_id, row_number))"
        )
        op.execute(
            "INSERT INTO csv_entries_old (task_id, row_number, data) "
            "SELECT task_id, row_number, data FROM csv_entries ORDER BY task_id, row_number"
        )
        op.execute("DROP TABLE csv_entries")
        op.execute("ALTER TABLE csv_entries_old RENAME TO csv_entries")
        return
    op.drop_constraint("pk_csv_entries", "csv_entries", type_="primary")
    op.add_column("csv_entries", sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False))
    op.create_primary_key("pk_csv_entries", "csv_entries", ["id"])
    op.create_unique_constraint("uq_csv_entries_task_id", "csv_entries", ["task_id", "row_number"])
