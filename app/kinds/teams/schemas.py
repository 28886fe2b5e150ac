"""What the teams endpoints take and give (and /openapi.json)."""

import marshmallow as ma
from marshmallow import fields, validate

from app.web.schemas import PageArgs, UploadSchema

# A cursor is the last name (or email) of a page, its UTF-8 bytes in hex.
NAME_CURSOR = r"^[0-9a-f]{1,2032}$"
_NEXT = {"description": "relative path of the next page; null on the last page"}


class TeamsUploadSchema(UploadSchema):
    """The multipart upload of a teams file: a header is required."""

    class Meta:
        unknown = ma.EXCLUDE
        exclude = ("has_header",)


class NamePageArgs(PageArgs):
    cursor = fields.String(
        load_default=None,
        validate=validate.Regexp(NAME_CURSOR, error="not a cursor this server made"),
        metadata={"description": "opaque; from `next`"},
    )


class TeamListArgs(NamePageArgs):
    name = fields.String(
        load_default=None,
        validate=validate.Regexp(r"^[^\x00]{1,1000}$", error="not a team name"),
        metadata={"description": "only the team with this name (compared after trimming)"},
    )


class TeamSchema(ma.Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    members = fields.Integer(
        required=True, validate=validate.Range(min=0), metadata={"description": "how many"}
    )
    created_at = fields.DateTime(required=True)
    created_by_task = fields.Integer(
        required=True,
        allow_none=True,
        metadata={
            "description": "the task that created it; null if it existed before a "
            "rollback that kept it"
        },
    )


class TeamListSchema(ma.Schema):
    teams = fields.List(fields.Nested(TeamSchema), required=True)
    next = fields.String(allow_none=True, required=True, metadata=_NEXT)


class MemberSchema(ma.Schema):
    user_id = fields.Integer(required=True)
    email = fields.String(required=True)
    name = fields.String(required=True, allow_none=True)
    role = fields.String(required=True, validate=validate.OneOf(["member", "admin"]))
    created_by_task = fields.Integer(
        required=True, metadata={"description": "the task that created the membership"}
    )


class MemberListSchema(ma.Schema):
    members = fields.List(fields.Nested(MemberSchema), required=True)
    next = fields.String(allow_none=True, required=True, metadata=_NEXT)


def decode_name_cursor(cursor: str) -> str:
    """The name (or email) a page starts after."""
    raw = bytes.fromhex(cursor if len(cursor) % 2 == 0 else "0" + cursor)
    # A forged cursor is merely a place in the order: never an error, never a NUL.
    return raw.decode("utf-8", errors="replace").replace("\0", "")


def name_key(name: str) -> int:
    """A name as the integer whose hex is its cursor (app.web.api.next_link's keys)."""
    return int.from_bytes(name.encode(), "big")
