"""What an export reads: its filter, and its sources frozen when it is created.

No Flask here. `make_plan` checks a request against the tasks table and records,
for every import it reads, the last row committed at that instant (`bound`): the
export writes exactly the rows with `row_number <= bound`, whatever is imported,
paused or resumed afterwards. The sources are listed in task id order, the order
the export writes them in (and its checkpoint counts in: see export_reader).
"""

import re
from dataclasses import dataclass
from datetime import date

import orjson
from sqlalchemy import select

from app.core import states as S
from app.core.models import Task

T = Task.__table__

_ISO = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_US = re.compile(r"([0-9]{2})/([0-9]{2})/([0-9]{4})")

GONE = (S.TERMINATING, S.REVOKED)


def parse_date(text) -> str | None:
    """`YYYY-MM-DD` or `MM/DD/YYYY` (spaces around allowed) as `YYYY-MM-DD`; else None."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if m := _ISO.fullmatch(text):
        year, month, day = m.groups()
    elif m := _US.fullmatch(text):
        month, day, year = m.groups()
    else:
        return None
    try:
        return date(int(year), int(month), int(day)).isoformat()
    except ValueError:  # 02/30/2017 and the like
        return None


class DateRange:
    """Whether a field is a date between `start` and `end` (inclusive, either open)."""

    CACHE = 100_000  # distinct field values remembered (dates repeat a lot)

    def __init__(self, start: str | None, end: str | None):
        self.start, self.end = start or "0000-00-00", end or "9999-99-99"
        self.seen: dict[str, bool] = {}

    def __call__(self, value: str) -> bool:
        hit = self.seen.get(value)
        if hit is None:
            iso = parse_date(value)
            hit = iso is not None and self.start <= iso <= self.end
            if len(self.seen) >= self.CACHE:
                self.seen.clear()
            self.seen[value] = hit
        return hit


class PlanError(Exception):
    """A request the service refuses: `code` 400 or 409 (`status` when a state is why)."""

    def __init__(self, code: int, message: str, status: str | None = None):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass
class Plan:
    """Everything an export task is created with (columns of its tasks row)."""

    header: list[str]
    options: dict
    rows_total: int | None  # known at once without a date filter; else counted first


def make_plan(
    conn,
    task_id: int | None,
    column: str | None,
    start,
    end,
    raw: bool = False,
    max_columns: int = 2000,
) -> Plan:
    """Check the request and freeze its sources: each import's last committed row."""
    if task_id is not None:
        tasks = conn.execute(select(T).where(T.c.id == task_id)).all()
        if not tasks:
            raise PlanError(400, f"task_id: no task {task_id}")
        if tasks[0].kind != "import":
            raise PlanError(400, f"task_id: task {task_id} is an {tasks[0].kind}, not an import")
        if tasks[0].status in GONE:
            status = tasks[0].status
            raise PlanError(409, f"task {task_id} is {status}: its rows are removed", status)
    else:
        tasks = conn.execute(
            select(T)
            .where(T.c.kind == "import", T.c.status.not_in(GONE), T.c.rows_imported > 0)
            .order_by(T.c.id)
        ).all()
    # The union keeps first-seen order; a dict makes it linear in the columns read
    # (list scans made three 10,000-column imports take 25 s).
    sources, union = [], {}
    for t in tasks:
        names = orjson.loads(t.header or "[]")
        position = {n: i for i, n in reversed(list(enumerate(names)))}  # first wins
        if column is not None and column not in position:
            continue  # an import without the column has no row to keep
        sources.append(
            {"id": t.id, "bound": t.last_row, "date": position[column] if column else None}
        )
        union.update(dict.fromkeys(names))
        if len(union) > max_columns:
            raise PlanError(
                400,
                f"the export would have more than {max_columns} columns "
                "(EXPORT_MAX_COLUMNS): export fewer imports at once (task_id)",
            )
    header = list(union)
    if column is not None and not sources:
        if task_id is None:
            raise PlanError(400, f"column: no import with rows has a column named {column!r}")
        names = ", ".join(orjson.loads(tasks[0].header or "[]"))
        raise PlanError(400, f"column: task {task_id} has no column {column!r} (it has {names})")
    options = {"task_id": task_id, "column": column, "from": start, "to": end, "raw": raw}
    options["snapshot"] = {"sources": sources}
    total = None if column else sum(t.rows_imported for t in tasks)
    return Plan(header=header, options=options, rows_total=total)
