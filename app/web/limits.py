"""Per-client limits: a request rate on state changes, and a cap on unfinished tasks.

A client is the remote address the app sees (behind the front proxy, the address
the trusted proxy forwards: see PROXY_HOPS). Both limits answer 429 with
`Retry-After` in the one error shape.

- RATE_LIMIT (Flask-Limiter syntax, shared by every limited endpoint of a client):
  every unsafe request (POST, PUT, PATCH, DELETE) counts, on any path, so a new
  endpoint that creates tasks is covered with nothing to add; a view marked
  `@exempt` does not count. Reads are never limited: clients poll, and every read
  is bounded in work instead. Counted in Redis when REDIS_URL is set (every web
  process shares the count), else in the process's memory.
- MAX_ACTIVE_TASKS_PER_CLIENT: a view marked `@starts_task` (and resume of a
  PAUSED task) is refused while the client has that many QUEUED, PROCESSING or
  PAUSING tasks. Checked, then created: two requests at once may pass together,
  so the cap can be overrun by the requests in flight, never by more.
"""

from flask import Flask, current_app, request
from flask_limiter import Limiter
from sqlalchemy import func, select

from app.core import states as S
from app.core.models import Task
from app.web.errors import ApiError
from app.web.guard import SAFE_METHODS

T = Task.__table__
ACTIVE = (S.QUEUED, S.PROCESSING, S.PAUSING)
# No one knows when a task of the client will finish: ask again in a few seconds.
ACTIVE_RETRY_AFTER_S = 5


def exempt(view):
    """Mark an unsafe view that the rate limit does not count (it creates nothing)."""
    view.rate_exempt = True
    return view


def starts_task(view):
    """Mark a view that creates a task: refused past MAX_ACTIVE_TASKS_PER_CLIENT."""
    view.starts_task = True
    return view


def client() -> str | None:
    """The client a request comes from (the key of both limits; recorded on its tasks)."""
    return request.remote_addr


def _view():
    return current_app.view_functions.get(request.endpoint or "")


def _not_counted() -> bool:
    return request.method in SAFE_METHODS or getattr(_view(), "rate_exempt", False)


def check_active(conn) -> None:
    """Raise the 429 if the client already has MAX_ACTIVE_TASKS_PER_CLIENT unfinished tasks."""
    cap = current_app.config["MAX_ACTIVE_TASKS_PER_CLIENT"]
    if not cap:
        return
    stmt = select(func.count()).where(T.c.client == client(), T.c.status.in_(ACTIVE))
    active = conn.execute(stmt).scalar()
    if active >= cap:
        raise ApiError(
            429,
            f"this client has {active} unfinished tasks (the most is {cap}): "
            "wait for one to finish, or pause one",
            retry_after=ACTIVE_RETRY_AFTER_S,
        )


def _check_marked():
    if getattr(_view(), "starts_task", False) and request.routing_exception is None:
        with current_app.extensions["store"].read() as conn:
            check_active(conn)


def _retry_after_at_least_one_second(response):
    # Flask-Limiter rounds down: "Retry-After: 0" would invite an immediate retry.
    if response.status_code == 429 and response.headers.get("Retry-After") == "0":
        response.headers["Retry-After"] = "1"
    return response


def init_app(app: Flask) -> None:
    """One Limiter per app, storage from REDIS_URL (memory without it)."""
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config.get("REDIS_URL") or "memory://")
    limiter = Limiter(
        client,
        application_limits=[lambda: current_app.config["RATE_LIMIT"]],
        application_limits_exempt_when=_not_counted,
        headers_enabled=True,
        key_prefix="taskctl",
        # A Redis outage must not stop the service: limits are skipped, and logged.
        swallow_errors=True,
        enabled=bool(app.config["RATE_LIMIT"]),  # RATE_LIMIT="" turns the rate limit off
    )
    app.after_request(_retry_after_at_least_one_second)  # runs after the limiter's
    limiter.init_app(app)
    app.before_request(_check_marked)
    app.extensions["limiter"] = limiter
