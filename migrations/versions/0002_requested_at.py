"""tasks.requested_at: when the last user action was accepted

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.add_column(sa.Column("requested_at", sa.Float(), nullable=True))


def downgrade():
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.drop_column("requested_at")
