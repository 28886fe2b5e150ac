"""The export kind: the rows an export matches, streamed into a CSV file.

The rows go source by source in task id order, each source's in row order. A
run first counts the rows it will write (only with a date filter: without one
the count is known when the export is created), then writes them. Every step
flushes and fsyncs the file, then commits its checkpoint: the position read up
to (`cursor`: a source and a row number within it, see export_reader.Reader),
the file's length (`bytes_done`) and the rows written (`last_row`,
`rows_imported`). A run starts by cutting the file back to `bytes_done`, so what
a lost run wrote past its checkpoint is written again exactly once. Until the
header is written (`bytes_done == 0`) `rows_total` is the count so far.

Files: `exports/<id>.csv.part` while it runs, renamed `exports/<id>.csv` once
COMPLETED (by the run, or by the first download if the run died in between).
"""

import csv
import io
import logging
import os
import time

import orjson
from flask import current_app
from sqlalchemy import select

from app.core.models import Task
from app.core.runner import Job, register
from app.core.store import COMPLETED, LOST, PAUSED, Step, Store
from app.kinds.exports import expiry
from app.kinds.exports import plan as export_plan
from app.kinds.exports.outfile import PartFile, discard_files, final_path, finalize, part_path
from app.kinds.exports.reader import CHUNK, Reader, Source

log = logging.getLogger(__name__)

T = Task.__table__

COUNT_PAGE = 5_000


class ExportFailed(Exception):
    """The export cannot be what it promised (a source was terminated, its file lost)."""


@register
class ExportJob(Job):
    kind = "export"
    row_tables = ()  # an export writes no rows, only its file

    def __init__(self, store: Store, task, config: dict):
        super().__init__(store, task, config)
        self.file: PartFile | None = None

    def _prepare(self) -> bool:
        """Load the plan made at creation (in steps(): a failure here fails the task).

        True if the export must start over: planned over csv_entries.id (before
        migration 0003), with a checkpoint that means nothing now.
        """
        options = orjson.loads(self.task.options)
        snap = options["snapshot"]
        legacy = "lo" in snap
        if legacy and self.task.bytes_done:
            raise ExportFailed("planned over csv_entries.id, which no longer exists: export again")
        self.header = orjson.loads(self.task.header or "[]")
        self.filtered = options.get("column") is not None
        self.match = export_plan.DateRange(options.get("from"), options.get("to"))
        specs = snap["sources"]
        names = self._source_headers([s["id"] for s in specs])
        sources = [Source(s, names[s["id"]], self.header) for s in specs]
        self.reader = Reader(self.store, sources, self.filtered)
        self.end = self.reader.end
        return legacy

    def _source_headers(self, ids: list[int]) -> dict[int, list[str]]:
        out = {}
        with self.store.reader.connect() as conn:
            for i in range(0, len(ids), CHUNK):
                stmt = select(T.c.id, T.c.header).where(T.c.id.in_(ids[i : i + CHUNK]))
                out.update({k: orjson.loads(v or "[]") for k, v in conn.execute(stmt)})
        return out

    def steps(self):
        task = self.task
        restart = self._prepare()
        self.file = PartFile(part_path(self.config["DATA_DIR"], task.id), task.bytes_done)
        cursor, written, total = task.cursor or 0, task.last_row, task.rows_total
        if restart:  # nothing written yet (else _prepare failed): count from the start
            cursor, total = 0, 0
        if task.bytes_done == 0:
            if self.filtered:
                total = yield from self._count(cursor, total or 0)
            cursor, written = 0, 0
            self.file.write(_csv_text([self.header]) if self.header else b"")
        yield from self._write(cursor, written, total if self.filtered else None)

    # -- counting ------------------------------------------------------------------

    def _count(self, cursor: int, total: int):
        """Count the matching rows in steps that checkpoint the count so far."""
        seconds = self.config["IMPORT_BATCH_SECONDS"]
        while cursor < self.end:
            started = time.monotonic()
            while cursor < self.end and time.monotonic() - started < seconds:
                src, page, cursor = self.reader.page(cursor, COUNT_PAGE, count_only=True)
                total += self._matches(src, page)
            yield Step(checkpoint={"cursor": cursor, "rows_total": total})
        return total

    def _matches(self, src: Source, page: list[tuple]) -> int:
        match = self.match
        if self.reader.sql_date:
            return sum([match(day) for _data, day in page])
        loads, k = orjson.loads, src.date
        return sum([match(loads(data)[k]) for data, _day in page])

    # -- writing -------------------------------------------------------------------

    def _kept(self, src: Source, page: list[tuple]) -> list:
        """The values, in the file's column order, of the page's rows the export keeps."""
        match, loads, arrange = self.match, orjson.loads, src.arrange
        filtered, sql_date = self.filtered, self.reader.sql_date
        out = []
        for data, day in page:
            if sql_date and not match(day):
                continue
            vals = loads(data)
            if filtered and not sql_date and not match(vals[src.date]):
                continue
            out.append(vals if arrange is None else arrange(vals))
        return out

    def _write(self, cursor: int, written: int, counted: int | None):
        """Write the rows in steps: the file synced first, then its checkpoint committed.

        Done at the end of the last source, or once the rows the count pass `counted`
        (with the same test, on rows that never change) are written: the tail of a
        date-ordered import past the window is not read for nothing.
        """
        batch_rows = self.config["IMPORT_BATCH_SIZE"]
        rate = self.config.get("IMPORT_MAX_ROWS_PER_S")
        if rate:  # keep checkpoints frequent when throttled: about 20 a second
            batch_rows = max(1, min(batch_rows, int(rate / 20)))
        seconds = self.config["IMPORT_BATCH_SECONDS"]
        done = False
        while not done:
            started, rows, buf = time.monotonic(), 0, io.StringIO()
            out = csv.writer(buf)
            while True:
                src, page, cursor = self.reader.page(cursor, batch_rows)
                kept = self._kept(src, page)
                out.writerows(kept)
                rows += len(kept)
                done = cursor >= self.end or (counted is not None and written + rows >= counted)
                if done or rows >= batch_rows or time.monotonic() - started >= seconds:
                    break
            # After the reads: a rollback deletes only once its task is TERMINATING,
            # so if no source is now, none of the rows just read was missing.
            gone = self.reader.gone()
            if gone:
                raise ExportFailed(f"source import {gone[0]} was terminated ({gone[1]})")
            self.file.write(buf.getvalue().encode())
            size = self.file.sync()
            written += rows
            yield Step(
                checkpoint={"cursor": cursor, "bytes_done": size, "last_row": written},
                rows=rows,
                done=done,
            )

    def finished(self, outcome: str) -> None:
        data_dir, task_id = self.config["DATA_DIR"], self.task.id
        if self.file is not None:
            if outcome == PAUSED:
                # A pause drops the batch in hand (store.commit): cut what it wrote,
                # so a paused export's file ends at its checkpoint. Read after the
                # pause committed; the file is still locked by this run.
                now = self.store.get(task_id)
                if now is not None:
                    self.file.cut(now.bytes_done)
            self.file.close()
        if outcome == COMPLETED:
            finalize(data_dir, task_id)
        elif outcome == LOST:
            # Terminated while it ran: its rollback may have removed the files before
            # this run created its .part; remove what this run left.
            now = self.store.get(task_id)
            if now is not None and now.status in export_plan.GONE:
                discard_files(data_dir, task_id)

    @classmethod
    def discard(cls, task) -> None:
        discard_files(current_app.config["DATA_DIR"], task.id)

    @classmethod
    def sweep(cls, store: Store, config: dict) -> None:
        expiry.sweep(store, config)


def _csv_text(rows) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode()


def download_path(data_dir: str, task) -> str | None:
    """The finished file of a COMPLETED export, or None if it is missing."""
    finalize(data_dir, task.id)
    path = final_path(data_dir, task.id)
    return path if os.path.exists(path) else None


def create(
    store: Store,
    task_id: int | None,
    column: str | None,
    start,
    end,
    client: str | None = None,
    max_columns: int = 2000,
) -> int:
    """Check an export request, freeze its sources and create its QUEUED task.

    Raises export_plan.PlanError for a request to refuse.
    """
    with store.reader.connect() as conn:
        plan = export_plan.make_plan(conn, task_id, column, start, end, max_columns)
    return store.create_task(
        kind="export",
        header=orjson.dumps(plan.header).decode(),
        options=orjson.dumps(plan.options).decode(),
        rows_total=plan.rows_total,
        client=client,
    )
