"""tasks.rows_rolled_back: what a terminated task's rollback removed

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column(
        "tasks",
        sa.Column("rows_rolled_back", sa.BigInteger(), nullable=False, server_default="0"),
    )
    # Tasks revoked before this revision held their count in rows_imported.
    op.execute(
        "UPDATE tasks SET rows_rolled_back = rows_imported, rows_imported = 0 "
        "WHERE status = 'REVOKED'"
    )


def downgrade():
    op.execute("UPDATE tasks SET rows_imported = rows_rolled_back WHERE status = 'REVOKED'")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("rows_rolled_back")
