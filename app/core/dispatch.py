"""Celery tasks, thin: a message only says "work on task X now"."""

import logging

from celery import shared_task
from flask import current_app

from app import kinds
from app.core import runner
from app.logs import task_context

log = logging.getLogger(__name__)
kinds.load()  # registers every kind's Job with the runner


@shared_task(name="run_task", ignore_result=True)
def run_task(task_id: int) -> str:
    """Run task `task_id` from its checkpoint; a no-op if another run holds it."""
    with task_context(task_id):
        outcome = runner.run(current_app.extensions["store"], task_id, current_app.config, enqueue)
    return outcome.value  # the worker's log shows e.g. 'not claimed', not the enum's repr


def wake_workers() -> None:
    """Have every worker's control thread look for rollbacks now (no reply awaited)."""
    try:
        current_app.extensions["celery"].control.broadcast("wake_control", reply=False)
    except Exception:
        log.warning("could not wake the workers; they look every few tenths of a second")


def enqueue(task_id: int) -> None:
    """Ring the doorbell for a task. If the broker is down the sweeper rings again."""
    try:
        run_task.apply_async((task_id,), retry=False)
    except Exception:
        log.warning("could not enqueue task %s; the sweeper will", task_id, exc_info=True)
