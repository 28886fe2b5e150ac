"""teams, users and memberships: the teams kind's tables

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _text(length: int):
    """Code point order on PostgreSQL too (SQLite's is binary), as the models say."""
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def _creator():
    return sa.Column("created_by_task", sa.Integer(), nullable=True)


def upgrade():
    op.create_table(
        "teams",
        sa.Column("id", BigId, nullable=False),
        sa.Column("name", _text(100), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        _creator(),
        sa.ForeignKeyConstraint(
            ["created_by_task"], ["tasks.id"], name=op.f("fk_teams_created_by_task_tasks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
        sa.UniqueConstraint("name", name=op.f("uq_teams_name")),
    )
    op.create_index(op.f("ix_teams_created_by_task"), "teams", ["created_by_task"])
    op.create_table(
        "users",
        sa.Column("id", BigId, nullable=False),
        sa.Column("email", _text(254), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        _creator(),
        sa.ForeignKeyConstraint(
            ["created_by_task"], ["tasks.id"], name=op.f("fk_users_created_by_task_tasks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_index(op.f("ix_users_created_by_task"), "users", ["created_by_task"])
    op.create_table(
        "memberships",
        sa.Column("team_id", BigId, nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by_task", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_task"], ["tasks.id"], name=op.f("fk_memberships_created_by_task_tasks")
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_memberships_team_id_teams")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_memberships_user_id_users")
        ),
        sa.PrimaryKeyConstraint("team_id", "user_id", name=op.f("pk_memberships")),
    )
    op.create_index(op.f("ix_memberships_created_by_task"), "memberships", ["created_by_task"])
    op.create_index("ix_memberships_user_id", "memberships", ["user_id"])


def downgrade():
    op.drop_table("memberships")
    op.drop_table("users")
    op.drop_table("teams")
