"""The teams endpoints: start a teams task, and read teams and their members."""

from sqlalchemy import func, select

from app.kinds.imports.api import start_task
from app.kinds.teams import rows
from app.kinds.teams.models import Membership, Team, User
from app.kinds.teams.schemas import (
    MemberListSchema,
    NamePageArgs,
    TeamListArgs,
    TeamListSchema,
    TeamSchema,
    TeamsUploadSchema,
    decode_name_cursor,
    name_key,
)
from app.web import limits
from app.web.api import Blueprint, next_link, store, task_links
from app.web.errors import ApiError
from app.web.schemas import TaskSchema, iso

blp = Blueprint("teams", __name__, description="Create teams, users and memberships from a CSV")

TEAMS, USERS, MEMBERS = Team.__table__, User.__table__, Membership.__table__
TEAM_ID = "<int(max=9223372036854775807):team_id>"  # a 64-bit id, unlike a task's
LINKS = ("get_task", "list_errors", "pause", "resume", "terminate")


@blp.route("/teams/imports", methods=["POST"])
@limits.starts_task
@blp.arguments(TeamsUploadSchema, location="multipart")
@blp.response(
    202,
    TaskSchema,
    description="the teams task, created and queued",
    headers={
        "Location": {
            "description": "the task's path, /tasks/<id>",
            "required": True,
            "schema": {"type": "string"},
        }
    },
)
@blp.alt_response(400, schema="Error", description="bad upload or header; no task is created")
@blp.alt_response(413, schema="Error", description="upload over MAX_UPLOAD_MB")
@blp.alt_response(507, schema="Error", description="no room to store the upload; nothing is kept")
@blp.doc(
    requestBody={
        "content": {"multipart/form-data": {"encoding": {"file": {"contentType": "text/csv"}}}}
    },
    responses={202: {"links": task_links("id", LINKS)}},
)
def create_teams(form):
    """Upload a CSV of team,email,name,role and create what does not exist yet.

    The header is required; its columns are found by name in any order
    (case-insensitive): `team` and `email` required, `name` and `role` optional.
    """
    return start_task({**form, "has_header": True}, "teams", check=rows.columns)


def _team_query():
    members = (
        select(func.count())
        .where(MEMBERS.c.team_id == TEAMS.c.id)
        .scalar_subquery()
        .label("members")
    )
    return select(TEAMS, members)


def _team(r) -> dict:
    return {
        "id": r.id,
        "name": r.name,
        "members": r.members,
        "created_at": iso(r.created_at),
        "created_by_task": r.created_by_task,
    }


def _after(args) -> str | None:
    return decode_name_cursor(args["cursor"]) if args.get("cursor") else None


@blp.route("/teams")
@blp.arguments(TeamListArgs, location="query")
@blp.response(200, TeamListSchema)
def list_teams(args):
    """Teams by name, with their number of members; `name` filters exactly."""
    stmt = _team_query()
    if args["name"] is not None:
        stmt = stmt.where(TEAMS.c.name == args["name"].strip())
    after = _after(args)
    if after is not None:
        stmt = stmt.where(TEAMS.c.name > after)
    with store().read() as conn:
        teams = conn.execute(stmt.order_by(TEAMS.c.name).limit(args["limit"])).all()
    return {
        "teams": [_team(r) for r in teams],
        "next": next_link(teams, args, lambda r: name_key(r.name)),
    }


def _require_team(conn, team_id: int):
    team = conn.execute(_team_query().where(TEAMS.c.id == team_id)).first()
    if team is None:
        raise ApiError(404, f"team {team_id} not found")
    return team


@blp.route(f"/teams/{TEAM_ID}")
@blp.response(200, TeamSchema)
@blp.alt_response(404, schema="Error", description="no such team")
def get_team(team_id):
    """One team."""
    with store().read() as conn:
        return _team(_require_team(conn, team_id))


@blp.route(f"/teams/{TEAM_ID}/members")
@blp.arguments(NamePageArgs, location="query")
@blp.response(200, MemberListSchema)
@blp.alt_response(404, schema="Error", description="no such team")
def list_members(args, team_id):
    """A team's members by email, with their role and the task that added them."""
    stmt = (
        select(
            USERS.c.id,
            USERS.c.email,
            USERS.c.name,
            MEMBERS.c.role,
            MEMBERS.c.created_by_task,
        )
        .join(MEMBERS, MEMBERS.c.user_id == USERS.c.id)
        .where(MEMBERS.c.team_id == team_id)
    )
    after = _after(args)
    if after is not None:
        stmt = stmt.where(USERS.c.email > after)
    with store().read() as conn:
        _require_team(conn, team_id)
        found = conn.execute(stmt.order_by(USERS.c.email).limit(args["limit"])).all()
    members = [
        {
            "user_id": r.id,
            "email": r.email,
            "name": r.name,
            "role": r.role,
            "created_by_task": r.created_by_task,
        }
        for r in found
    ]
    key = lambda r: name_key(r.email)  # noqa: E731
    return {"members": members, "next": next_link(found, args, key, team_id=team_id)}
