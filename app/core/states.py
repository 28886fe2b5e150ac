"""The task state machine, shared by every kind of task (no Flask, no database).

EVENTS is the one table of status changes, user and system alike: each event
is listed once with the statuses it leaves, the status it enters and why it
exists. The store writes a status only through an event of this table
(Store._move), and the API derives a task's allowed `actions` from it.
"""

from dataclasses import dataclass
from enum import StrEnum

QUEUED = "QUEUED"
PROCESSING = "PROCESSING"
PAUSING = "PAUSING"
PAUSED = "PAUSED"
TERMINATING = "TERMINATING"
REVOKED = "REVOKED"
COMPLETED = "COMPLETED"
FAILED = "FAILED"

ALL = (QUEUED, PROCESSING, PAUSING, PAUSED, TERMINATING, REVOKED, COMPLETED, FAILED)

# A run may commit a checkpoint only while the task is in one of these; a run
# token is held only in these (and by a rollback while TERMINATING).
RUNNING = (PROCESSING, PAUSING)


@dataclass(frozen=True)
class Event:
    """One allowed status change: from any of `frm` to `to`, and why it exists."""

    frm: tuple[str, ...]
    to: str
    why: str


EVENTS: dict[str, Event] = {
    "create": Event((), QUEUED, "a new task waits for a worker"),
    # -- user actions (the API and the command line) --------------------------------
    "pause": Event((QUEUED,), PAUSED, "pause before any run took it: nothing to stop"),
    "request_pause": Event((PROCESSING,), PAUSING, "pause a run: it stops at its next checkpoint"),
    "resume": Event((PAUSED,), QUEUED, "resume: a new run continues from the checkpoint"),
    "cancel_pause": Event((PAUSING,), PROCESSING, "resume before the run obeyed the pause"),
    "terminate": Event(
        (QUEUED, PROCESSING, PAUSING, PAUSED, COMPLETED, FAILED),
        TERMINATING,
        "terminate: the holder stops, then a rollback removes what the task wrote",
    ),
    # -- a run (the worker) ----------------------------------------------------------
    "claim": Event((QUEUED,), PROCESSING, "a run takes the task with a fresh run token"),
    "complete": Event((PROCESSING,), COMPLETED, "the run's last checkpoint committed"),
    "too_many_errors": Event((PROCESSING,), FAILED, "a checkpoint passed max_errors"),
    "obey_pause": Event((PAUSING,), PAUSED, "the run reached a checkpoint after a pause"),
    "release": Event((PROCESSING,), QUEUED, "worker shutting down: another run goes on"),
    "release_pausing": Event((PAUSING,), PAUSED, "worker shutting down while asked to pause"),
    "fail": Event(RUNNING, FAILED, "the run raised an error; its rows stay until terminated"),
    # -- the sweep (crash recovery) --------------------------------------------------
    "requeue_stale": Event((PROCESSING,), QUEUED, "the run's heartbeat went silent: re-run"),
    "pause_unheld": Event((PAUSING,), PAUSED, "nobody holds the pause: its checkpoint stands"),
    # -- the rollback ----------------------------------------------------------------
    "revoke": Event((TERMINATING,), REVOKED, "the rollback removed every row and file"),
}


class RefusedTransition(ValueError):
    """A status write that the table does not list."""


def check(name: str, frm: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], str]:
    """The (from statuses, to status) of event `name`, narrowed to `frm`; refuse others."""
    event = EVENTS.get(name)
    if event is None:
        raise RefusedTransition(f"no event {name!r} in the state table")
    if frm is None:
        return event.frm, event.to
    if not frm or not set(frm) <= set(event.frm):
        raise RefusedTransition(f"{name}: {frm} -> {event.to} is not in the state table")
    return tuple(frm), event.to


# action -> the events it may take, by the status it starts from.
ACTION_EVENTS = {
    "pause": ("pause", "request_pause"),
    "resume": ("resume", "cancel_pause"),
    "terminate": ("terminate",),
}
ACTIONS = tuple(ACTION_EVENTS)

# action -> statuses where the action is already done or under way: 200, unchanged.
ALREADY = {
    "pause": (PAUSED, PAUSING),
    "resume": (QUEUED, PROCESSING),
    "terminate": (TERMINATING, REVOKED),
}


def action_event(action: str, status: str) -> str | None:
    """The event a user action takes from `status`, or None (already done, or a 409)."""
    for name in ACTION_EVENTS[action]:
        if status in EVENTS[name].frm:
            return name
    return None


def target(action: str, status: str) -> str | None:
    """The status an action moves a task to from `status`, or None."""
    name = action_event(action, status)
    return EVENTS[name].to if name else None


def actions(status: str) -> list[str]:
    """The actions that change a task in `status` (those whose goal holds are left out)."""
    return [a for a in ACTIONS if action_event(a, status)]


class Outcome(StrEnum):
    """How a run ended (what runner.run returns); not a status."""

    CONTINUE = "continue"  # the checkpoint committed; the run goes on
    PAUSED = "paused"  # the run stopped at a checkpoint for a pause
    COMPLETED = "completed"
    FAILED = "failed"
    LOST = "lost"  # terminated or taken over: the run no longer holds the task
    RELEASED = "released"  # shutting down: handed back at the checkpoint
    NOT_CLAIMED = "not claimed"  # a duplicate or stale message: another run holds it
