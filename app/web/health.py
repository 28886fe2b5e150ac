"""GET /healthz: database, broker and live workers.

This node's health: 503 when its database or broker fails, and, on the embedded
broker (no REDIS_URL), while its worker is down: nothing would run what this node
accepts. With Redis, workers live elsewhere and come and go, so a node with none
still answers 200 with `workers: 0`; `?workers=N` asks for at least N (503 if
fewer), for a readiness check that needs a worker.
"""

from flask import current_app
from sqlalchemy import text

from app.web.api import Blueprint, store
from app.web.schemas import HealthArgs, HealthSchema

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


def live_workers() -> int:
    """Workers answering a ping: within a second with Redis (all of them are
    counted, so the whole second is waited). The embedded broker has one worker and
    polls its queue files: the first answer is enough, and up to 3 s is allowed for
    it on a busy machine."""
    control = current_app.extensions["celery"].control
    if current_app.config["REDIS_URL"]:
        return len(control.ping(timeout=1.0) or [])
    return len(control.ping(timeout=3.0, limit=1) or [])


@blp.route("/healthz")
@blp.public  # for load balancers and orchestrators
@blp.arguments(HealthArgs, location="query")
@blp.response(200, HealthSchema)
@blp.alt_response(
    503,
    schema=HealthSchema,
    description="the database or broker failed (named in the body), or fewer live "
    "workers than asked for (at least 1 on the embedded broker)",
)
def healthz(args):
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
            workers = live_workers()
        except Exception as exc:
            broker = f"error: {type(exc).__name__}: {exc}"[:300]
    body = {"database": database, "broker": broker, "workers": workers}
    wanted = args.get("workers")
    if wanted is None:
        wanted = 0 if current_app.config["REDIS_URL"] else 1
    return body, 200 if database == broker == "ok" and workers >= wanted else 503
