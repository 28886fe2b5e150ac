"""The operator's command line: `flask --app app tasks list|show|pause|resume|terminate|sweep`.

The same transitions as the API (app.core.actions). Exit status: 0 done (or already
done), 1 refused (the reason on stderr), 2 no such task.
"""

import click
import orjson
from flask import current_app
from flask.cli import AppGroup

from app.core import actions, queries
from app.core import states as S
from app.core.dispatch import enqueue, wake_workers
from app.logs import task_context
from app.web.api import task_dict

tasks_cli = AppGroup("tasks", help="List, inspect and control tasks.")


def _store():
    return current_app.extensions["store"]


def _show(task_id: int) -> dict:
    task = _store().get(task_id)
    if task is None:
        click.echo(f"no such task: {task_id}", err=True)
        raise SystemExit(2)
    return task_dict(task, paused_at=task.paused_at)


def _progress(t: dict) -> str:
    return "-" if t["progress"] is None else f"{round(t['progress'] * 100)}%"


@tasks_cli.command("list")
@click.option("--status", type=click.Choice(S.ALL), help="only tasks in this status")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def list_tasks(status, limit, as_json):
    """Tasks, newest first."""
    with _store().read() as conn:
        rows = queries.tasks_page(conn, limit, None, status)
    if not as_json:
        click.echo(f"{'ID':>6}  {'KIND':<7} {'STATUS':<11} {'PROGRESS':>8} {'ROWS':>10}  FILE")
    for row in rows:
        t = task_dict(row, paused_at=row.paused_at)
        if as_json:
            click.echo(orjson.dumps(t))
        else:
            click.echo(
                f"{t['id']:>6}  {t['kind']:<7} {t['status']:<11} {_progress(t):>8} "
                f"{t['rows_imported']:>10}  {t['filename'] or ''}"
            )


@tasks_cli.command("show")
@click.argument("task_id", type=int)
def show(task_id):
    """One task, as the API shows it (JSON)."""
    click.echo(orjson.dumps(_show(task_id), option=orjson.OPT_INDENT_2))


def _action(action: str, task_id: int) -> None:
    with task_context(task_id):
        try:
            status, changed = actions.act(_store(), action, task_id)
        except actions.NoSuchTask:
            click.echo(f"no such task: {task_id}", err=True)
            raise SystemExit(2) from None
        except actions.Refused as exc:
            click.echo(f"refused: {exc}", err=True)
            raise SystemExit(1) from None
    click.echo(f"task {task_id}: {status}" if changed else f"task {task_id}: already {status}")


for _name, _help in (
    ("pause", "Pause: the worker stops at its next checkpoint."),
    ("resume", "Resume from the checkpoint (or cancel a pending pause)."),
    ("terminate", "Terminate and roll back every row the task wrote."),
):

    def _command(task_id, _name=_name):
        _action(_name, task_id)

    tasks_cli.command(_name, help=_help)(click.argument("task_id", type=int)(_command))


@tasks_cli.command("sweep")
def sweep():
    """What every worker's sweeper does, now: hand back tasks whose worker went
    silent, ring queued tasks nobody took, and wake the workers for rollbacks."""
    ids = _store().sweep(current_app.config["HEARTBEAT_TIMEOUT_S"])
    for task_id in ids:
        enqueue(task_id)
    wake_workers()
    click.echo(f"rang {len(ids)} task(s) again" + (f": {', '.join(map(str, ids))}" if ids else ""))


def init_app(app) -> None:
    app.cli.add_command(tasks_cli)
