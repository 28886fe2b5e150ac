"""GET /metrics: Prometheus text format, from the database (see app/metrics.py).

It follows the API token rule unless METRICS_PUBLIC=1 (a scraper inside the
network then needs no token). Not part of /openapi.json: it is Prometheus's format.
"""

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import metrics
from app.core.runner import KINDS
from app.web import auth
from app.web.health import live_workers

bp = Blueprint("metrics", __name__)


def _workers() -> int:
    try:
        return live_workers()
    except Exception:  # the broker is down: no worker can be reached
        return 0


@bp.route("/metrics")
@auth.public_if("METRICS_PUBLIC")
def scrape():
    """The metrics a Prometheus server scrapes."""
    app = current_app._get_current_object()
    registry = app.extensions.get("metrics_registry")
    if registry is None:
        registry = metrics.web_registry(app.extensions["store"].reader, sorted(KINDS), _workers)
        app.extensions["metrics_registry"] = registry
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
