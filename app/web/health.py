"""GET /healthz: database, broker and live workers."""

from flask import current_app
from sqlalchemy import text

from app.core.models import db
from app.web.api import Blueprint
from app.web.schemas import HealthSchema

blp = Blueprint("health", __name__, description="Service health")


def _check(fn) -> str:
    try:
        fn()
        return "ok"
    except Exception as exc:  # the point is to report any failure
        return f"error: {type(exc).__name__}: {exc}"[:300]


@blp.route("/healthz")
@blp.public  # for load balancers and orchestrators
@blp.response(200, HealthSchema)
@blp.alt_response(503, schema=HealthSchema, description="something failed; named in the body")
def healthz():
    """Health of the database and the broker, and the number of live workers."""
    celery = current_app.extensions["celery"]
    database = _check(lambda: db.session.execute(text("SELECT 1")))
    db.session.rollback()

    def broker_check():
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    broker = _check(broker_check)
    workers = 0
    if broker == "ok":
        try:
            workers = len(celery.control.ping(timeout=1.0) or [])
        except Exception as exc:
            broker = f"error: {type(exc).__name__}: {exc}"[:300]
    body = {"database": database, "broker": broker, "workers": workers}
    return body, 200 if database == broker == "ok" else 503
