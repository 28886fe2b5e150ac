"""The teams kind: teams, users and memberships created in bulk from a CSV."""

from app.kinds.teams import models  # noqa: F401  (its tables, on the shared metadata)
from app.kinds.teams.job import TeamsJob as Job


def blueprints() -> list:
    """The teams endpoints: start a teams task; read teams and their members."""
    from app.kinds.teams import api

    return [api.blp]


__all__ = ["Job", "blueprints"]
