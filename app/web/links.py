"""Signed download links: the page hands a download to the browser without the token."""

import marshmallow as ma
from marshmallow import fields

from app.web import auth, limits
from app.web.api import Blueprint, store
from app.web.errors import ApiError

blp = Blueprint("links", __name__, description="Short-lived signed download links")


class DownloadLinkSchema(ma.Schema):
    url = fields.String(
        required=True,
        metadata={"description": "relative URL of the download, signed; no token needed"},
    )
    expires_in = fields.Integer(
        required=True, metadata={"description": "seconds the link stays valid"}
    )


@blp.route("/tasks/<int:task_id>/download_link", methods=["POST"])
@limits.exempt  # creates nothing: a signature
@blp.response(200, DownloadLinkSchema)
@blp.alt_response(404, schema="Error", description="unknown task")
def download_link(task_id):
    """A link to the task's download that works without the token for a minute."""
    if store().get(task_id) is None:
        raise ApiError(404, f"task {task_id} not found")
    return {"url": auth.download_link(task_id), "expires_in": auth.LINK_SECONDS}
