"""tasks.stats: a kind's own counters (a JSON object), written with its checkpoints

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.add_column(sa.Column("stats", sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.drop_column("stats")
