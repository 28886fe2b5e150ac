"""The export kind: the rows an export matches, streamed in key order into a CSV file.

A run first counts the rows it will write (only with a date filter: without one
the count is known when the export is created), then writes them by key. Every
step flushes and fsyncs the file, then commits its checkpoint: the last key read
(`cursor`), the file's length (`bytes_done`) and the rows written (`last_row`,
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

from . import export_plan
from .export_file import PartFile, discard_files, final_path, finalize, part_path
from .export_reader import CHUNK, Reader, Source
from .models import Task
from .runner import Job, register
from .store import COMPLETED, LOST, Step, Store

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

    def _prepare(self) -> None:
        """Load the plan made at creation (in steps(): a failure here fails the task)."""
        options = orjson.loads(self.task.options)
        snap = options["snapshot"]
        self.lo, self.hi = snap["lo"], snap["hi"]
        self.header = orjson.loads(self.task.header or "[]")
        self.filtered = options.get("column") is not None
        self.match = export_plan.DateRange(options.get("from"), options.get("to"))
        specs = snap["sources"]
        names = self._source_headers([s["id"] for s in specs])
        self.sources = {s["id"]: Source(s, names[s["id"]], self.header) for s in specs}
        self.reader = Reader(self.store, self.hi, self.sources, self.filtered)

    def _source_headers(self, ids: list[int]) -> dict[int, list[str]]:
        out = {}
        with self.store.reader.connect() as conn:
            for i in range(0, len(ids), CHUNK):
                stmt = select(T.c.id, T.c.header).where(T.c.id.in_(ids[i : i + CHUNK]))
                out.update({k: orjson.loads(v or "[]") for k, v in conn.execute(stmt)})
        return out

    def steps(self):
        task = self.task
        self._prepare()
        self.file = PartFile(part_path(self.config["DATA_DIR"], task.id), task.bytes_done)
        cursor, written, total = max(task.cursor or 0, self.lo), task.last_row, task.rows_total
        if task.bytes_done == 0:
            if self.filtered:
                total = yield from self._count(cursor, total or 0)
            cursor, written = self.lo, 0
            self.file.write(_csv_text([self.header]) if self.header else b"")
        yield from self._write(cursor, written, total if self.filtered else None)

    # -- counting ------------------------------------------------------------------

    def _count(self, cursor: int, total: int):
        """Count the matching rows in steps that checkpoint the count so far."""
        seconds = self.config["IMPORT_BATCH_SECONDS"]
        while cursor < self.hi:
            started = time.monotonic()
            while cursor < self.hi and time.monotonic() - started < seconds:
                page, cursor = self.reader.page(cursor, COUNT_PAGE, count_only=True)
                total += self._matches(page)
            yield Step(checkpoint={"cursor": cursor, "rows_total": total})
        return total

    def _matches(self, page: list[tuple]) -> int:
        sources, match, loads = self.sources, self.match, orjson.loads
        sql_date = self.reader.sql_date
        n = 0
        for _key, task_id, row_number, data, day in page:
            src = sources.get(task_id)
            if src is None or row_number > src.bound:
                continue  # not a source, or committed after the export started
            n += match(day if sql_date else loads(data)[src.date])
        return n

    # -- writing -------------------------------------------------------------------

    def _kept(self, page: list[tuple]) -> list:
        """The values, in the file's column order, of the page's rows the export keeps."""
        sources, match, loads = self.sources, self.match, orjson.loads
        filtered, sql_date = self.filtered, self.reader.sql_date
        out = []
        for _key, task_id, row_number, data, day in page:
            src = sources.get(task_id)
            if src is None or row_number > src.bound:
                continue
            if sql_date and not match(day):
                continue
            vals = loads(data)
            if filtered and not sql_date and not match(vals[src.date]):
                continue
            out.append(vals if src.arrange is None else src.arrange(vals))
        return out

    def _write(self, cursor: int, written: int, counted: int | None):
        """Write the rows in steps: the file synced first, then its checkpoint committed.

        Done at the last key, or once the rows the count pass `counted` (with the same
        test, on rows that never change) are written: the tail of a date-ordered
        import past the window is not read for nothing.
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
                page, cursor = self.reader.page(cursor, batch_rows)
                kept = self._kept(page)
                out.writerows(kept)
                rows += len(kept)
                done = cursor >= self.hi or (counted is not None and written + rows >= counted)
                if done or rows >= batch_rows or time.monotonic() - started >= seconds:
                    break
            # After the reads: a rollback deletes only once its task is TERMINATING,
            # so if no source is now, none of the rows just read was missing.
            gone = self.reader.gone(list(self.sources))
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
        if self.file is not None:
            self.file.close()
        data_dir, task_id = self.config["DATA_DIR"], self.task.id
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


def _csv_text(rows) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode()


def download_path(data_dir: str, task) -> str | None:
    """The finished file of a COMPLETED export, or None if it is missing."""
    finalize(data_dir, task.id)
    path = final_path(data_dir, task.id)
    return path if os.path.exists(path) else None


def create(store: Store, task_id: int | None, column: str | None, start, end) -> int:
    """Check an export request, freeze its sources and create its QUEUED task.

    Raises export_plan.PlanError for a request to refuse.
    """
    with store.reader.connect() as conn:  # one snapshot on SQLite; ordered reads anyway
        plan = export_plan.make_plan(conn, task_id, column, start, end)
    return store.create_task(
        kind="export",
        header=orjson.dumps(plan.header).decode(),
        options=orjson.dumps(plan.options).decode(),
        rows_total=plan.rows_total,
    )
