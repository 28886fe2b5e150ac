"""Finished exports expire: EXPORT_TTL_HOURS after COMPLETED, their file is removed.

The task stays COMPLETED and shows `expires_at` (finished_at + the TTL); a download
after it is a 410. Every worker's control thread calls `sweep` at each sweep; its
work is bounded by the export files stored (on disk or in the bucket), not by the
exports ever made.
"""

import logging

from sqlalchemy import select

from app.core import states as S
from app.core import storage
from app.core.models import Task
from app.core.store import Store
from app.kinds.exports import outfile
from app.kinds.exports.reader import CHUNK

log = logging.getLogger(__name__)

T = Task.__table__


def expiry(task, config: dict) -> float | None:
    """When a COMPLETED export's file goes (EXPORT_TTL_HOURS after it finished)."""
    if task.status != S.COMPLETED or task.finished_at is None:
        return None
    return task.finished_at + config["EXPORT_TTL_HOURS"] * 3600


def sweep(store: Store, config: dict) -> None:
    """Remove the files of exports that finished EXPORT_TTL_HOURS ago (database clock)."""
    ttl_s = config["EXPORT_TTL_HOURS"] * 3600
    for task_id in expired(store, storage.for_config(config).stored_exports(), ttl_s):
        outfile.discard_files(config, store.get(task_id))
        log.info("export %s expired: file removed", task_id)


def expired(store: Store, ids: list[int], ttl_s: float) -> list[int]:
    """Those of `ids` that are COMPLETED exports finished more than `ttl_s` ago."""
    out = []
    with store.read() as conn:
        for i in range(0, len(ids), CHUNK):
            stmt = select(T.c.id).where(
                T.c.id.in_(ids[i : i + CHUNK]),
                T.c.kind == "export",
                T.c.status == S.COMPLETED,
                T.c.finished_at < store.now - ttl_s,
            )
            out += conn.execute(stmt).scalars().all()
    return out
