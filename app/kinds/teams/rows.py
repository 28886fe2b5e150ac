"""A teams file's rows: the columns by header name, the rules a row must keep.

Knows nothing of Flask or the database. The CSV itself is read by the import's
parser (byte offsets, row numbers, malformed rows); this module turns its rows
into members, or into the reason a row breaks the rules, and finds the line and
text of such a row for its row error.
"""

import csv
from dataclasses import dataclass

from app.core import storage
from app.kinds.imports.parser import RAW_LIMIT, UploadRejected

COLUMNS = ("team", "email", "name", "role")
REQUIRED = ("team", "email")
ROLES = ("member", "admin")
MAX_TEAM, MAX_NAME, MAX_EMAIL = 100, 200, 254


@dataclass(frozen=True)
class Member:
    """A row that keeps the rules: put `email` in `team` with `role`."""

    row_number: int
    team: str
    email: str
    name: str | None
    role: str


def columns(header: list[str]) -> dict[str, int]:
    """Column name -> position, by header name in any order (case-insensitive).

    Raises UploadRejected (a 400 at upload) for an unknown or missing column.
    """
    names = [h.strip().lower() for h in header]
    unknown = [h for h, n in zip(header, names, strict=True) if n not in COLUMNS]
    if unknown:
        raise UploadRejected(
            f"unknown column(s) {', '.join(map(repr, unknown))}: "
            f"a teams file has the columns {', '.join(COLUMNS)}"
        )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UploadRejected(f"column(s) named twice: {', '.join(twice)}")
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise UploadRejected(f"missing required column(s): {', '.join(missing)}")
    return {n: i for i, n in enumerate(names)}


def valid_email(email: str) -> bool:
    """One `@`, a non-empty local part, a domain with a dot, no whitespace, <= 254 chars."""
    local, at, domain = email.partition("@")
    return (
        bool(at)
        and bool(local)
        and "@" not in domain
        and "." in domain
        and len(email) <= MAX_EMAIL
        and not any(c.isspace() for c in email)
    )


def member(row_number: int, fields: list[str], cols: dict[str, int]) -> Member | str:
    """The row as a Member, or the reason it breaks the rules."""
    team = fields[cols["team"]].strip()
    email = fields[cols["email"]].strip().lower()
    name = fields[cols["name"]].strip() if "name" in cols else ""
    role = fields[cols["role"]].strip().lower() if "role" in cols else ""
    if not team:
        return "team is empty"
    if len(team) > MAX_TEAM:
        return f"team is over {MAX_TEAM} characters"
    if not email:
        return "email is empty"
    if not valid_email(email):
        return f"email {email[:100]!r} is not a valid address"
    if len(name) > MAX_NAME:
        return f"name is over {MAX_NAME} characters"
    if role and role not in ROLES:
        return f"role {role[:50]!r} is not one of {', '.join(ROLES)}"
    return Member(row_number, team, email, name or None, role or ROLES[0])


def locate(location: str, delimiter: str, encoding: str, span: tuple, wanted: set[int]) -> dict:
    """Line number and raw text (cut at 1 KB) of the records numbered in `wanted`.

    `span` is (start byte, end byte, line number at start, rows numbered before
    start): a batch as the parser reported it. The bytes are read again, as the
    parser read them (blank lines skipped, unreadable records numbered), only
    when a batch has rows that break the rules.
    """
    start, end, line, before = span
    with storage.open_range(location, start) as f:  # on disk or in the bucket
        chunk = f.pread(end - start, start)
    lines = [piece + b"\n" for piece in chunk.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    if not lines[-1]:
        lines.pop()
    consumed = 0

    def feed():
        nonlocal consumed
        for raw in lines:
            consumed += 1
            yield raw.decode(encoding, errors="surrogateescape")

    reader = csv.reader(feed(), delimiter=delimiter)
    found, number = {}, before
    while len(found) < len(wanted):
        first = consumed
        try:
            row = next(reader, None)
        except csv.Error:
            row = [""]  # a record the parser reported as malformed: numbered all the same
        if row is None:
            break
        if not row:
            continue
        number += 1
        if number in wanted:
            raw = b"".join(lines[first:consumed])[:RAW_LIMIT]
            found[number] = (line + first, raw.decode(encoding, errors="replace"))
    return found
