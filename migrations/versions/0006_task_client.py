"""tasks.client: who created the task, for MAX_ACTIVE_TASKS_PER_CLIENT

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.add_column(sa.Column("client", sa.String(64), nullable=True))
        batch_op.create_index("ix_tasks_client", ["client"])


def downgrade():
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.drop_index("ix_tasks_client")
        batch_op.drop_column("client")
