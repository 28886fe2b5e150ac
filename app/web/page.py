"""The HTML dashboard: one page whose script drives the JSON API."""

from flask import Blueprint, render_template

from app.web.auth import public

bp = Blueprint("views", __name__)


@bp.get("/")
@public  # the page asks for the API token itself
def index():
    """Serve the dashboard page (upload form, live task table, task detail)."""
    return render_template("index.html")
