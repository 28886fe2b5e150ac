"""Finished exports expire: EXPORT_TTL_HOURS after COMPLETED, their file is removed.

The task stays COMPLETED and shows `expires_at` (finished_at + the TTL); a download
after it is a 410. Every worker's control thread calls `sweep` at each sweep; its
work is bounded by the files on disk, not by the exports ever made.
"""

import logging
import os

from sqlalchemy import select

from app.core.models import Task
from app.core.store import COMPLETED, Store
from app.kinds.exports.outfile import EXPORTS, discard_files
from app.kinds.exports.reader import CHUNK

log = logging.getLogger(__name__)

T = Task.__table__


def sweep(store: Store, config: dict) -> None:
    """Remove the files of exports that finished EXPORT_TTL_HOURS ago (database clock)."""
    ttl_s = config["EXPORT_TTL_HOURS"] * 3600
    for task_id in expired(store, stored_ids(config["DATA_DIR"]), ttl_s):
        discard_files(config["DATA_DIR"], task_id)
        log.info("export %s expired: file removed", task_id)


def stored_ids(data_dir: str) -> list[int]:
    """The ids of the exports with a file on disk."""
    ids = set()
    for name in os.listdir(os.path.join(data_dir, EXPORTS)):
        head = name.split(".", 1)[0]
        if head.isdigit():
            ids.add(int(head))
    return sorted(ids)


def expired(store: Store, ids: list[int], ttl_s: float) -> list[int]:
    """Those of `ids` that are COMPLETED exports finished more than `ttl_s` ago."""
    out = []
    with store.reader.connect() as conn:
        for i in range(0, len(ids), CHUNK):
            stmt = select(T.c.id).where(
                T.c.id.in_(ids[i : i + CHUNK]),
                T.c.kind == "export",
                T.c.status == COMPLETED,
                T.c.finished_at < store.now - ttl_s,
            )
            out += conn.execute(stmt).scalars().all()
    return out
