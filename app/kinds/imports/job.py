"""The import kind: a CSV upload (or a source object) streamed into csv_entries from its
byte offset."""

import orjson

from app.core import storage
from app.core.models import CsvEntry, TaskError
from app.core.runner import Job, register
from app.core.states import Outcome
from app.core.store import Step
from app.kinds.imports import parser as importer


def csv_options(task, config: dict) -> importer.CsvOptions:
    opts = orjson.loads(task.options or "{}")
    return importer.CsvOptions(
        has_header=opts.get("has_header", True),
        delimiter=opts.get("delimiter", ","),
        encoding=opts.get("encoding", "utf-8"),
        max_field_kb=config["MAX_FIELD_KB"],
    )


def read_from_checkpoint(
    task, config: dict, copy_task_id: int | None = None, json_array: bool = False
):
    """The task's upload in batches, from its checkpoint (the parser in a child); the
    rows' form as read_batches gives them (pairs, a COPY block or a JSON array)."""
    batch_rows = config["IMPORT_BATCH_SIZE"]
    rate = config.get("IMPORT_MAX_ROWS_PER_S")
    if rate:  # keep checkpoints frequent when throttled: about 20 a second
        batch_rows = max(1, min(batch_rows, int(rate / 20)))
    return importer.read_batches_in_child(
        location=task.upload_path,
        options=csv_options(task, config),
        columns=len(orjson.loads(task.header)),
        offset=task.bytes_done,
        last_row=task.last_row,
        line_number=task.line_number,
        batch_rows=batch_rows,
        batch_seconds=config["IMPORT_BATCH_SECONDS"],
        error_budget=task.max_errors - task.error_count,
        copy_task_id=copy_task_id,
        json_array=json_array,
    )


def _remove(task) -> None:
    """Remove the task's upload, unless it is a source object the service did not create."""
    if not orjson.loads(task.options or "{}").get("source"):
        storage.delete(task.upload_path)


@register
class ImportJob(Job):
    kind = "import"
    row_tables = (CsvEntry.__table__, TaskError.__table__)

    def steps(self):
        task = self.task
        # The form the database takes fastest: binary COPY, or a JSON array for json_each.
        postgres = self.store.dialect == "postgresql"
        copy_task_id = task.id if postgres else None
        for b in read_from_checkpoint(task, self.config, copy_task_id, json_array=not postgres):
            if b is None:  # no batch yet: the runner looks at the task meanwhile
                yield None
                continue
            yield Step(
                checkpoint={
                    "last_row": b.last_row,
                    "bytes_done": b.offset,
                    "line_number": b.line_number,
                },
                rows=b.count,
                errors=len(b.errors),
                done=b.done,
                write=self.store.row_writer(
                    task.id, b.rows, b.errors, first_row=b.last_row - b.count + 1
                ),
            )

    def finished(self, outcome: Outcome) -> None:
        if outcome == Outcome.COMPLETED:
            _remove(self.task)

    @classmethod
    def discard(cls, task, config: dict) -> None:
        _remove(task)
