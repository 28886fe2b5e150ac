"""Streaming CSV reading with exact byte offsets and row validation.

Knows nothing of Flask or the database: it turns a file into batches of
`(row_number, json_array_text)` plus row errors, each batch ending with the
checkpoint (byte offset, row number and line number of the next record).
"""

import codecs
import csv
import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

SNIFF_BYTES = 64 * 1024
RAW_LIMIT = 1024


class UploadRejected(ValueError):
    """The file cannot be imported at all (a 400 at upload)."""


@dataclass(frozen=True)
class CsvOptions:
    has_header: bool = True
    delimiter: str = ","
    encoding: str = "utf-8"
    max_field_kb: int = 128


@dataclass(frozen=True)
class Layout:
    """What inspecting the start of a file found: where data rows begin."""

    header: list[str]
    data_offset: int
    data_line: int


@dataclass
class RowError:
    row_number: int
    line_number: int
    raw: str
    reason: str


@dataclass
class Batch:
    rows: list[tuple[int, str]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    offset: int = 0  # byte offset of the next record
    last_row: int = 0  # data rows consumed so far
    line_number: int = 1  # line number of the next record
    done: bool = False


def check_encoding(encoding: str) -> str:
    """Return the codec's canonical name; only ASCII-compatible codecs are accepted."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise UploadRejected(f"unknown encoding {encoding!r}") from None
    if '\n,;\t|"'.encode(info.name, errors="replace") != b'\n,;\t|"':
        raise UploadRejected(
            f"encoding {encoding!r} is not supported: use an ASCII-compatible one "
            "such as utf-8, latin-1 or cp1252"
        )
    return info.name


class _Lines:
    """Yields decoded lines from a binary file, tracking the byte offset and line."""

    def __init__(self, f, encoding: str, offset: int, line: int):
        self.f = f
        self.encoding = encoding
        self.pos = offset
        self.line = line - 1  # lines consumed so far
        self.bad: str | None = None

    def __iter__(self):
        return self

    def __next__(self) -> str:
        raw = self.f.readline()
        if not raw:
            raise StopIteration
        self.pos += len(raw)
        self.line += 1
        if b"\0" in raw:
            self.bad = "NUL byte in row"
        try:
            return raw.decode(self.encoding)
        except UnicodeDecodeError:
            self.bad = f"row is not valid {self.encoding} text"
            return raw.decode(self.encoding, errors="replace")


def _reader(lines: _Lines, options: CsvOptions):
    csv.field_size_limit(options.max_field_kb * 1024)
    return csv.reader(lines, delimiter=options.delimiter)


def inspect(path: str, options: CsvOptions) -> Layout:
    """Check the first 64 KB and the header; raise UploadRejected if unusable."""
    encoding = check_encoding(options.encoding)
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
        complete = len(head) < SNIFF_BYTES or not f.read(1)
    if not head:
        raise UploadRejected("the file is empty")
    start = len(codecs.BOM_UTF8) if encoding == "utf-8" and head.startswith(codecs.BOM_UTF8) else 0
    if b"\0" in head:
        raise UploadRejected("the file is not text: it contains NUL bytes")
    try:
        text = codecs.getincrementaldecoder(encoding)().decode(head[start:], final=complete)
    except UnicodeDecodeError as exc:
        raise UploadRejected(
            f"the file is not valid {encoding} text (byte {start + exc.start})"
        ) from None
    if "\r" in text and "\n" not in text:
        raise UploadRejected("line endings are bare CR: save the file with LF or CRLF")
    lines = _Lines(io.BytesIO(head[start:]), encoding, start, 1)
    reader = _reader(lines, options)
    try:
        first = next((row for row in reader if row), None)
    except csv.Error as exc:
        raise UploadRejected(f"the first row cannot be read: {exc}") from None
    if first is None or (lines.pos >= len(head) and not complete):
        raise UploadRejected("no complete row in the first 64 KB: only blank lines or a huge row")
    if not options.has_header:
        return Layout([f"col{i}" for i in range(1, len(first) + 1)], start, 1)
    for i, name in enumerate(first, 1):
        if not name.strip():
            raise UploadRejected(f"header column {i} has an empty name")
    duplicates = sorted({n for n in first if first.count(n) > 1})
    if duplicates:
        raise UploadRejected(f"duplicate header names: {', '.join(duplicates)}")
    return Layout(first, lines.pos, lines.line + 1)


def read_batches(
    path: str,
    options: CsvOptions,
    columns: int,
    offset: int,
    last_row: int,
    line_number: int,
    batch_rows: int,
    batch_seconds: float,
    error_budget: int | None = None,
) -> Iterator[Batch]:
    """Stream batches from the record at `offset`, numbering rows after `last_row`.

    Each batch is bounded by `batch_rows` and by `batch_seconds`; the last one
    has `done` set. Blank lines are skipped and not numbered. A batch also ends
    at the error that uses up `error_budget` (errors allowed from here on) plus one.
    """
    encoding = check_encoding(options.encoding)
    dumps = orjson.dumps
    monotonic = time.monotonic
    with open(path, "rb") as f:
        f.seek(offset)
        fd = f.fileno()
        lines = _Lines(f, encoding, offset, line_number)
        reader = _reader(lines, options)
        row_number = last_row
        while True:
            batch = Batch()
            rows = batch.rows
            deadline = monotonic() + batch_seconds
            done = False
            while len(rows) + len(batch.errors) < batch_rows:
                start, first_line = lines.pos, lines.line + 1
                lines.bad = None
                try:
                    row = next(reader, None)
                except csv.Error as exc:
                    row, bad = [], f"malformed CSV: {exc}"
                else:
                    if row is None:
                        done = True
                        break
                    if not row and lines.bad is None:
                        continue  # a blank line
                    bad = lines.bad
                    if bad is None and len(row) != columns:
                        bad = f"expected {columns} fields, found {len(row)}"
                row_number += 1
                if bad is None:
                    rows.append((row_number, dumps(row).decode()))
                else:
                    raw = os.pread(fd, min(RAW_LIMIT, lines.pos - start), start)
                    text = raw.decode(encoding, errors="replace").replace("\0", "\\0")
                    batch.errors.append(RowError(row_number, first_line, text, bad))
                    if error_budget is not None:
                        error_budget -= 1
                        if error_budget < 0:
                            break  # past max_errors: this checkpoint fails the task
                if not row_number & 63 and monotonic() > deadline:
                    break
            batch.offset, batch.last_row, batch.line_number = lines.pos, row_number, lines.line + 1
            batch.done = done
            yield batch
            if done:
                return
