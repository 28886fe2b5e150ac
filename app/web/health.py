"""GET /healthz: database, broker and live workers."""

from flask import current_app
from sqlalchemy import text

from app.web.api import Blueprint, store
from app.web.schemas import HealthSchema

blp = Blueprint("health", __name__, description="Service health")


def _check(fn) -> str:
    try:
        fn()
        return "ok"
    except Exception as exc:  # the point is to report any failure
        return f"error: {type(exc).__name__}: {exc}"[:300]


def _ping_database() -> None:
    with store().read() as conn:
        conn.execute(text("SELECT 1"))


@blp.route("/healthz")
@blp.public  # for load balancers and orchestrators
@blp.response(200, HealthSchema)
@blp.alt_response(503, schema=HealthSchema, description="something failed; named in the body")
def healthz():
    """Health of the database and the broker, and the number of live workers."""
    celery = current_app.extensions["celery"]
    database = _check(_ping_database)

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
