"""Tasks: list, show, and the pause / resume / terminate actions."""

import orjson

from app.core import actions, queries
from app.core import states as S
from app.web import limits
from app.web.api import Blueprint, next_link, page_cursor, store, task_dict, within_budget
from app.web.errors import ApiError
from app.web.schemas import TaskListArgs, TaskListSchema, TaskPageArgs, TaskSchema

blp = Blueprint("tasks", __name__, description="Tasks and their control actions")


def _load(task_id: int):
    task = store().get(task_id)
    if task is None:
        raise ApiError(404, f"task {task_id} not found")
    return task


def _page(rows, args):
    items = [task_dict(r, paused_at=r.paused_at, header=False) for r in rows]
    items, cut = within_budget(items, lambda item: len(orjson.dumps(item, default=str)))
    return {"tasks": items, "next": next_link(rows[: len(items)], args, lambda r: r.id, cut)}


@blp.route("/tasks")
@blp.arguments(TaskListArgs, location="query")
@blp.response(200, TaskListSchema)
def list_tasks(args):
    """All tasks, newest first; `status` filters."""
    with store().read() as conn:
        rows = queries.tasks_page(conn, args["limit"], page_cursor(args), args["status"])
    return _page(rows, args)


@blp.route("/tasks/<int:task_id>")
@blp.response(200, TaskSchema)
@blp.alt_response(404, schema="Error")
def get_task(task_id):
    """One task."""
    task = _load(task_id)
    return task_dict(task, paused_at=task.paused_at)


@blp.route("/paused_tasks")
@blp.arguments(TaskPageArgs, location="query")
@blp.response(200, TaskListSchema)
def paused_tasks(args):
    """Paused tasks with their checkpoint (`last_row`) and `paused_at`."""
    with store().read() as conn:
        rows = queries.paused_page(conn, args["limit"], page_cursor(args))
    return _page(rows, args)


@blp.route("/terminated_tasks")
@blp.arguments(TaskPageArgs, location="query")
@blp.response(200, TaskListSchema)
def terminated_tasks(args):
    """Revoked tasks: terminated, none of their rows remain."""
    with store().read() as conn:
        rows = queries.tasks_page(conn, args["limit"], page_cursor(args), S.REVOKED)
    return _page(rows, args)


def _act(action: str, task_id: int):
    if action == "resume" and getattr(_load(task_id), "status", None) == S.PAUSED:
        with store().read() as conn:
            limits.check_active(conn)  # it would be unfinished again
    try:
        _, changed = actions.act(store(), action, task_id)
    except actions.NoSuchTask:
        raise ApiError(404, f"task {task_id} not found") from None
    except actions.Refused as exc:
        raise ApiError(409, str(exc), status=exc.status) from None
    task = _load(task_id)
    return task_dict(task, paused_at=task.paused_at), (202 if changed else 200)


for _action, _doc in (
    ("pause", "Pause: the worker stops at its next checkpoint and is freed."),
    ("resume", "Resume from the checkpoint (or cancel a pending pause)."),
    ("terminate", "Terminate and roll back: every row the task wrote is removed."),
):

    def _view(task_id, _action=_action):
        return _act(_action, task_id)

    _view.__doc__ = _doc
    _view.__name__ = _action
    blp.route(f"/{_action}/<int:task_id>", methods=["POST"], endpoint=_action)(
        blp.response(202, TaskSchema, description="the action was taken")(
            blp.alt_response(200, schema=TaskSchema, description="already done; unchanged")(
                blp.alt_response(404, schema="Error")(
                    blp.alt_response(409, schema="Error", description="not allowed now")(_view)
                )
            )
        )
    )
