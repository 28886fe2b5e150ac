"""The task state machine, shared by every kind of task (no Flask, no database)."""

QUEUED = "QUEUED"
PROCESSING = "PROCESSING"
PAUSING = "PAUSING"
PAUSED = "PAUSED"
TERMINATING = "TERMINATING"
REVOKED = "REVOKED"
COMPLETED = "COMPLETED"
FAILED = "FAILED"

ALL = (QUEUED, PROCESSING, PAUSING, PAUSED, TERMINATING, REVOKED, COMPLETED, FAILED)

# A run may commit a checkpoint only while the task is in one of these.
RUNNING = (PROCESSING, PAUSING)

# action -> {from status: to status}; a status missing here is a 409
# unless the action's goal already holds (see ALREADY).
TRANSITIONS = {
    "pause": {QUEUED: PAUSED, PROCESSING: PAUSING},
    "resume": {PAUSED: QUEUED, PAUSING: PROCESSING},
    "terminate": {s: TERMINATING for s in (QUEUED, PROCESSING, PAUSING, PAUSED, COMPLETED, FAILED)},
}

# action -> statuses where the action is already done or under way: 200, unchanged.
ALREADY = {
    "pause": (PAUSED, PAUSING),
    "resume": (QUEUED, PROCESSING),
    "terminate": (TERMINATING, REVOKED),
}

ACTIONS = tuple(TRANSITIONS)


def target(action: str, status: str) -> str | None:
    """The status an action moves a task to from `status`, or None."""
    return TRANSITIONS[action].get(status)
