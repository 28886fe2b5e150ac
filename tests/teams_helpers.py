"""Helpers for the teams kind's tests: files, the sequential model, the tables as sets."""

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text

from tests.helpers import upload

HEADER = ("team", "email", "name", "role")


def write_teams(path: Path, rows, header=HEADER) -> Path:
    """A teams CSV with `header` and `rows` (tuples in the header's order)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def generated(n: int, teams: int = 40, users: int | None = None, seed: int = 0, prefix="") -> list:
    """`n` valid rows naming `teams` teams and `users` users (repeats included)."""
    rng = random.Random(seed)
    users = users or max(1, n // 2)
    rows = []
    for _ in range(n):
        u = rng.randrange(users)
        rows.append(
            (
                f"{prefix}Team {rng.randrange(teams):03d}",
                f"{prefix}user{u}@example.com",
                f"User {u}" if rng.random() < 0.8 else "",
                rng.choice(["member", "admin", ""]),
            )
        )
    return rows


@dataclass
class World:
    """Teams, users and memberships as a sequence of rows leaves them (the SPEC's rules)."""

    teams: set = field(default_factory=set)
    users: dict = field(default_factory=dict)  # email -> name
    pairs: dict = field(default_factory=dict)  # (team, email) -> role
    counts: dict = field(default_factory=dict)

    def apply(self, rows) -> dict:
        """Apply valid rows (team, email, name, role) in order; return what they did."""
        counts = dict.fromkeys(
            ("teams_created", "users_created", "memberships_created", "rows_unchanged"), 0
        )
        for team, email, name, role in rows:
            team, email = team.strip(), email.strip().lower()
            if team not in self.teams:
                self.teams.add(team)
                counts["teams_created"] += 1
            if email not in self.users:
                self.users[email] = name.strip() or None
                counts["users_created"] += 1
            if (team, email) in self.pairs:
                counts["rows_unchanged"] += 1
            else:
                self.pairs[team, email] = role.strip().lower() or "member"
                counts["memberships_created"] += 1
        return counts


def tables(engine) -> World:
    """What the database holds, as a World (counts left empty)."""
    with engine.connect() as conn:
        teams = set(conn.execute(text("SELECT name FROM teams")).scalars())
        users = dict(conn.execute(text("SELECT email, name FROM users")).all())
        pairs = dict(
            ((t, e), r)
            for t, e, r in conn.execute(
                text(
                    "SELECT t.name, u.email, m.role FROM memberships m "
                    "JOIN teams t ON t.id = m.team_id JOIN users u ON u.id = m.user_id"
                )
            ).all()
        )
    return World(teams, users, pairs)


def creators(engine) -> dict:
    """table -> {key: created_by_task}."""
    with engine.connect() as conn:
        return {
            "teams": dict(conn.execute(text("SELECT name, created_by_task FROM teams")).all()),
            "users": dict(conn.execute(text("SELECT email, created_by_task FROM users")).all()),
            "memberships": dict(
                ((t, e), c)
                for t, e, c in conn.execute(
                    text(
                        "SELECT t.name, u.email, m.created_by_task FROM memberships m "
                        "JOIN teams t ON t.id = m.team_id JOIN users u ON u.id = m.user_id"
                    )
                ).all()
            ),
        }


def counts_of(task: dict) -> dict:
    return {
        k: task[k]
        for k in ("teams_created", "users_created", "memberships_created", "rows_unchanged")
    }


class _PostTo:
    """A test client whose POSTs go to one path (tests.helpers.upload posts to /)."""

    def __init__(self, client, path: str):
        self.client, self.path = client, path

    def post(self, _path, **kwargs):
        return self.client.post(self.path, **kwargs)


def upload_teams(client, path: Path, **form):
    """POST a teams file to /teams/imports through the test client, streamed from disk."""
    return upload(_PostTo(client, "/teams/imports"), path, **form)
