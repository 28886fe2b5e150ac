"""The user actions, one path for the API and the operator's command line:
the atomic transition, then whatever must happen next (enqueue, wake the workers)."""

from app.core import states as S
from app.core.dispatch import enqueue, wake_workers
from app.core.store import Store


class NoSuchTask(LookupError):
    """The task id names no task."""


class Refused(Exception):
    """The action is not allowed in the task's current status."""

    def __init__(self, action: str, status: str):
        super().__init__(f"cannot {action} a task that is {status}")
        self.status = status


def act(store: Store, action: str, task_id: int) -> tuple[str, bool]:
    """Apply `action` to a task: (the status it left, changed). Changed is a 202,
    unchanged (already done) a 200.

    Raises NoSuchTask or Refused (409).
    """
    result = store.transition(task_id, action)
    if result is None:
        raise NoSuchTask(task_id)
    status, changed = result
    if not changed and status not in S.ALREADY[action]:
        raise Refused(action, status)
    if changed and status == S.QUEUED:
        enqueue(task_id)
    elif changed and status == S.TERMINATING:
        wake_workers()  # a rollback starts now, not at the next poll
    return status, changed
