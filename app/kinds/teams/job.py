"""The teams kind: a CSV of team,email,name,role into teams, users and memberships.

The file is read by the import's parser in a child process, from the task's
byte offset; each batch's rows are checked here and applied in its checkpoint
transaction (writes.py), so every row counts exactly once across pause, resume,
crash and duplicate delivery. Terminate undoes what the task created (undo.py).
"""

import orjson
from marshmallow import Schema, fields, validate

from app.core.models import TaskError
from app.core.runner import Job, register
from app.core.states import Outcome
from app.core.store import Step, Store
from app.kinds.imports import parser
from app.kinds.imports.job import ImportJob, csv_options, read_from_checkpoint
from app.kinds.teams import rows as R
from app.kinds.teams import undo as teams_undo
from app.kinds.teams.writes import COUNTERS, stats_of, writer


def _count(description: str) -> fields.Integer:
    return fields.Integer(validate=validate.Range(min=0), metadata={"description": description})


class KeptSchema(Schema):
    teams = _count("teams the task created that its rollback kept: another task uses them")
    users = _count("users the task created that its rollback kept: another task uses them")


@register
class TeamsJob(Job):
    kind = "teams"
    row_tables = (TaskError.__table__,)
    task_fields = {
        "teams_created": _count("a teams task's teams created"),
        "users_created": _count("a teams task's users created"),
        "memberships_created": _count("a teams task's memberships created"),
        "rows_unchanged": _count("a teams task's rows whose membership already existed"),
        "kept": fields.Nested(
            KeptSchema, metadata={"description": "what a teams task's rollback kept (counts)"}
        ),
    }

    def steps(self):
        task, config = self.task, self.config
        options = csv_options(task, config)
        cols = R.columns(orjson.loads(task.header))
        batches = read_from_checkpoint(task, config)
        span = (task.bytes_done, task.line_number, task.last_row)  # where the next batch starts
        for b in batches:
            if b is None:  # no batch yet: the runner looks at the task meanwhile
                yield None
                continue
            members, broken = [], {}
            for number, data in b.rows:
                found = R.member(number, orjson.loads(data), cols)
                if isinstance(found, R.Member):
                    members.append(found)
                else:
                    broken[number] = found
            errors = b.errors
            if broken:
                start, line, before = span
                where = R.locate(
                    task.upload_path,
                    options.delimiter,
                    parser.check_encoding(options.encoding),
                    (start, b.offset, line, before),
                    set(broken),
                )
                errors = errors + [
                    parser.RowError(n, *where.get(n, (0, "")), reason)
                    for n, reason in broken.items()
                ]
                errors.sort(key=lambda e: e.row_number)
            write_members = writer(task.id, members)
            write_errors = self.store.row_writer(task.id, [], errors)

            def write(conn, write_members=write_members, write_errors=write_errors):
                write_members(conn)
                write_errors(conn)

            yield Step(
                checkpoint={
                    "last_row": b.last_row,
                    "bytes_done": b.offset,
                    "line_number": b.line_number,
                },
                rows=len(members),
                errors=len(errors),
                done=b.done,
                write=write,
            )
            span = (b.offset, b.line_number, b.last_row)

    def finished(self, outcome: Outcome) -> None:
        if outcome == Outcome.COMPLETED:
            ImportJob.discard(self.task, self.config)  # the upload is no longer needed

    @classmethod
    def undo(cls, store: Store, task, token: str, config: dict) -> bool:
        """Its memberships, then the teams and users it created that nothing else uses."""
        if not teams_undo.undo(store, task.id, token):
            return False
        return super().undo(store, task, token, config)  # its row errors

    @classmethod
    def discard(cls, task, config: dict) -> None:
        ImportJob.discard(task, config)

    @classmethod
    def present(cls, task, shown: dict, config: dict) -> dict:
        stats = stats_of(task)
        shown.update({k: stats[k] for k in COUNTERS})
        shown["kept"] = {"teams": stats["kept_teams"], "users": stats["kept_users"]}
        return shown
