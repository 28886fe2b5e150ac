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

Files (see outfile): `exports/<id>.csv.part` while it runs, renamed
`exports/<id>.csv` once COMPLETED (by the run, or by the first download if the
run died in between); in object storage, a multipart upload checkpointed at part
boundaries (the rows after the last part are written again by the next run).
"""

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor

import orjson
from marshmallow import fields, validate
from sqlalchemy import select

from app.core import states as S
from app.core.database import iso
from app.core.models import Task
from app.core.runner import Job, register
from app.core.states import Outcome
from app.core.store import Step, Store
from app.kinds.exports import csvrows, expiry, outfile
from app.kinds.exports import plan as export_plan
from app.kinds.exports.formulas import risky, safe_row
from app.kinds.exports.reader import CHUNK, Reader, Source

log = logging.getLogger(__name__)

T = Task.__table__

COUNT_PAGE = 5_000

# A step (fsync of the file + checkpoint commit) every STEP_PAGES pages of
# IMPORT_BATCH_SIZE rows or STEP_SECONDS, whichever comes first: a pause does not
# wait for a step (the runner looks at the task between pages), so steps can be
# large; an fsync and a commit each 20 ms cost more than the rows they carry.
STEP_PAGES, STEP_SECONDS = 10, 0.25


class ExportFailed(Exception):
    """The export cannot be what it promised (a source was terminated, its file lost)."""


@register
class ExportJob(Job):
    kind = "export"
    row_tables = ()  # an export writes no rows, only its file
    task_fields = {
        "rows_total": fields.Integer(
            allow_none=True,
            validate=validate.Range(min=0),
            metadata={"description": "an export's rows matched; null while counting"},
        ),
        "expires_at": fields.DateTime(
            allow_none=True,
            metadata={
                "description": "a COMPLETED export: when its file is removed "
                "(EXPORT_TTL_HOURS); then a download is 410"
            },
        ),
    }

    def __init__(self, store: Store, task, config: dict):
        super().__init__(store, task, config)
        self.file = None

    def _prepare(self) -> None:
        """Load the plan made at creation (in steps(): a failure here fails the task)."""
        self.options = options = orjson.loads(self.task.options)
        snap = options["snapshot"]
        self.header = orjson.loads(self.task.header or "[]")
        self.filtered = options.get("column") is not None
        self.raw = options.get("raw", False)  # else formula-leading cells are escaped
        self.match = export_plan.DateRange(options.get("from"), options.get("to"))
        specs = snap["sources"]
        names = self._source_headers([s["id"] for s in specs])
        sources = [Source(s, names[s["id"]], self.header) for s in specs]
        self.reader = Reader(self.store, sources, self.filtered)
        self.end = self.reader.end

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
        self.file = outfile.open_file(self.config, task)
        cursor, written, total = task.cursor or 0, task.last_row, task.rows_total
        if task.bytes_done == 0:
            if self.filtered:
                total = yield from self._count(cursor, total or 0)
            cursor, written = 0, 0
            header = self.header if self.raw else safe_row(self.header)
            self.file.write(csvrows.from_values([header]) if header else b"")
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

    def _page(self, cursor: int, n: int) -> tuple[bytes, int, int]:
        """The next page of rows the export keeps, as CSV: (its lines, the rows in
        them, the position read up to). A source in the file's column order goes by
        its JSON texts (csvrows: no Python call per row); one that is not, or a date
        test the database cannot make, goes value by value."""
        safe = not self.raw
        if self.reader.source_at(cursor).arrange is None:
            if not self.filtered:
                block, count, cursor = self.reader.block(cursor, n)
                return csvrows.from_json_lines(block, safe), count, cursor
            if self.reader.sql_date:
                _, page, cursor = self.reader.page(cursor, n)
                match = self.match
                kept = [data[1:-1] for data, day in page if match(day)]
                block = "\r\n".join(kept).encode()
                return csvrows.from_json_lines(block, safe), len(kept), cursor
        src, page, cursor = self.reader.page(cursor, n)
        kept = self._kept(src, page)
        return csvrows.from_values(kept), len(kept), cursor

    def _kept(self, src: Source, page: list[tuple]) -> list:
        """The values, in the file's column order, of the page's rows the export keeps."""
        match, loads, arrange = self.match, orjson.loads, src.arrange
        filtered, sql_date = self.filtered, self.reader.sql_date
        # Formula-safe: one search over the page's text; rows are looked at only on a hit.
        check = not self.raw and risky("\n".join([data for data, _day in page]))
        out = []
        for data, day in page:
            if sql_date and not match(day):
                continue
            vals = loads(data)
            if filtered and not sql_date and not match(vals[src.date]):
                continue
            if check and risky(data):
                vals = safe_row(vals)
            out.append(vals if arrange is None else arrange(vals))
        return out

    def _write(self, cursor: int, written: int, counted: int | None):
        """Write the rows in steps: the file synced first, then its checkpoint committed.

        Done at the end of the last source, or once the rows the count pass `counted`
        (with the same test, on rows that never change) are written: the tail of a
        date-ordered import past the window is not read for nothing.
        """
        batch_rows = self.config["IMPORT_BATCH_SIZE"]
        step_rows, seconds = batch_rows * STEP_PAGES, STEP_SECONDS
        rate = self.config.get("IMPORT_MAX_ROWS_PER_S")
        if rate:  # keep checkpoints frequent when throttled: about 20 a second
            batch_rows = step_rows = max(1, min(batch_rows, int(rate / 20)))
            seconds = self.config["IMPORT_BATCH_SECONDS"]
        pages = _Ahead(
            lambda at: self._page(at, batch_rows),
            lambda at: self.reader.after(at, batch_rows),
            self.end,
            # Two queries in flight keep two PostgreSQL backends busy (1,000,000 rows:
            # 0.69 -> 0.79 of psql's \copy TO); two sqlite3 readers in one process
            # only contend for the GIL (1.14 -> 0.75 of sqlite3 -csv).
            depth=2 if self.store.dialect == "postgresql" else 1,
        )
        try:
            yield from self._steps(pages, cursor, written, counted, step_rows, seconds)
        finally:
            pages.close()

    def _steps(self, pages, cursor: int, written: int, counted, step_rows: int, seconds: float):
        """_write's steps, its pages from `pages` (_Ahead)."""
        done, saved = False, written  # saved: rows the committed checkpoint holds
        while not done:
            started, rows, out = time.monotonic(), 0, []
            while True:
                if cursor >= self.end:  # nothing left to read (an export of no rows at all)
                    done = True
                    break
                lines, kept, cursor = pages(cursor)
                out.append(lines)
                rows += kept
                done = cursor >= self.end or (counted is not None and written + rows >= counted)
                if done or rows >= step_rows or time.monotonic() - started >= seconds:
                    break
                yield None  # between pages: the runner obeys a pause or terminate now
            # After the reads: a rollback deletes only once its task is TERMINATING,
            # so if no source is now, none of the rows just read was missing.
            gone = self.reader.gone()
            if gone:
                raise ExportFailed(f"source import {gone[0]} was terminated ({gone[1]})")
            for lines in out:  # page by page: no copy of the step into one buffer
                self.file.write(lines)
            written += rows
            # The file says what is durable now: all of it (a file), or up to the last
            # part uploaded (object storage): only that is checkpointed and counted.
            checkpoint = self.file.sync({"cursor": cursor, "last_row": written}, done)
            if "storage" in checkpoint:
                self.options["storage"] = checkpoint.pop("storage")
                checkpoint["options"] = orjson.dumps(self.options).decode()
            now_saved = checkpoint.get("last_row", saved)
            yield Step(checkpoint=checkpoint, rows=now_saved - saved, done=done)
            saved = now_saved

    def finished(self, outcome: Outcome) -> None:
        task_id = self.task.id
        if self.file is not None:
            now = self.store.get(task_id) if outcome != Outcome.COMPLETED else None
            if outcome == Outcome.PAUSED and now is not None:
                # A pause drops the batch in hand (store.commit): cut what it wrote,
                # so a paused export's file ends at its checkpoint. Read after the
                # pause committed; the file is still locked by this run.
                self.file.cut(now.bytes_done)
            if outcome != Outcome.COMPLETED:
                # An object upload this run began that no checkpoint lists (it was
                # taken over before its first part committed) goes now.
                self.file.abandon(outfile.state(now) if now is not None else None)
            self.file.close()
        if outcome == Outcome.COMPLETED:
            outfile.finalize(self.config, self.store.get(task_id))
        elif outcome == Outcome.LOST:
            # Terminated while it ran: its rollback may have removed the files before
            # this run created its .part; remove what this run left.
            now = self.store.get(task_id)
            if now is not None and now.status in export_plan.GONE:
                outfile.discard_files(self.config, now)

    @classmethod
    def present(cls, task, shown: dict, config: dict) -> dict:
        """Progress by rows written over rows matched; the download's file name."""
        # rows_total is final once the header is written (bytes_done > 0); before, a
        # date-filtered export is still counting. last_row = rows_imported = rows written.
        rows_total = task.rows_total if task.bytes_done else None
        progress = (task.rows_imported / rows_total) if rows_total else 0.0
        eta, rate = None, shown["rows_per_second"]
        if rate and rows_total is not None:
            eta = max(rows_total - task.rows_imported, 0) / rate
        # Not the frozen sources nor the storage's checkpoint: the request's filters.
        hidden = ("snapshot", "storage")
        options = {k: v for k, v in (shown["options"] or {}).items() if k not in hidden}
        return {
            **shown,
            "filename": f"export-{task.id}.csv",
            "progress": shown["progress"]
            if task.status in (S.COMPLETED, S.REVOKED)
            else min(progress, 1.0),
            "eta_seconds": eta,
            "options": options,
            "rows_total": rows_total,
            "expires_at": iso(expiry.expiry(task, config)),
        }

    @classmethod
    def discard(cls, task, config: dict) -> None:
        outfile.discard_files(config, task)

    @classmethod
    def sweep(cls, store: Store, config: dict) -> None:
        """Finished exports past EXPORT_TTL_HOURS lose their file (a download is a 410)."""
        expiry.sweep(store, config)


class _Ahead:
    """Pages read ahead, in threads: while this thread writes page k, those read
    pages k + 1 .. k + depth (sqlite3 and psycopg let go of the GIL while the
    database works) and turn them into CSV. `read(position)` gives (lines, rows,
    position read up to), which `after(position)` knows before reading; a page is
    only ever read, so a read for nothing costs nothing else."""

    def __init__(self, read, after, end: int, depth: int = 1):
        self.read, self.after, self.end, self.depth = read, after, end, depth
        self.pool = ThreadPoolExecutor(depth, thread_name_prefix="export-read")
        self.ahead: dict[int, Future] = {}  # position -> its read, in flight or done

    def __call__(self, at: int):
        if at not in self.ahead:  # a first page, or a position nobody foresaw
            self.ahead = {at: self.pool.submit(self.read, at)}
        pos = at
        while len(self.ahead) <= self.depth:
            pos = self.after(pos)
            if pos >= self.end:
                break
            if pos not in self.ahead:
                self.ahead[pos] = self.pool.submit(self.read, pos)
        return self.ahead.pop(at).result()

    def close(self) -> None:
        """Wait for the reads in flight (their connections go back to the pool)."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def create(
    store: Store,
    task_id: int | None,
    column: str | None,
    start,
    end,
    raw: bool = False,
    client: str | None = None,
    max_columns: int = 2000,
) -> int:
    """Check an export request, freeze its sources and create its QUEUED task.

    Raises export_plan.PlanError for a request to refuse.
    """
    with store.reader.connect() as conn:
        plan = export_plan.make_plan(
            conn, task_id, column, start, end, raw=raw, max_columns=max_columns
        )
    return store.create_task(
        kind="export",
        header=orjson.dumps(plan.header).decode(),
        options=orjson.dumps(plan.options).decode(),
        rows_total=plan.rows_total,
        client=client,
    )
