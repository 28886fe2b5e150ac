"""The teams kind's tables: teams, users and memberships, each tagged with its creator.

`created_by_task` is the task that created the row, so a rollback removes exactly
what its task made; it is NULL for a row a rollback kept (another task's
membership uses it). On the shared metadata, so the migrations test sees them.
"""

from sqlalchemy import Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import BigId, db


def _text(length: int):
    """Ordered and compared by code point on both databases (SQLite's binary order)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


class Team(db.Model):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(_text(100), unique=True)  # trimmed, case-sensitive
    created_at: Mapped[float] = mapped_column(Float)
    created_by_task: Mapped[int | None] = mapped_column(Integer, ForeignKey("tasks.id"), index=True)


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(_text(254), unique=True)  # lower-case
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Float)
    created_by_task: Mapped[int | None] = mapped_column(Integer, ForeignKey("tasks.id"), index=True)


class Membership(db.Model):
    """A user in a team, with a role; keyed by (team, user)."""

    __tablename__ = "memberships"
    # The user's side: a rollback asks "does anything still use this user?".
    __table_args__ = (Index("ix_memberships_user_id", "user_id"),)

    team_id: Mapped[int] = mapped_column(BigId, ForeignKey("teams.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    created_by_task: Mapped[int] = mapped_column(Integer, ForeignKey("tasks.id"), index=True)
