"""Streaming CSV reading with exact byte offsets and row validation.

Knows nothing of Flask or the database: it turns a file into batches of
`(row_number, json_array_text)` plus row errors, each batch ending with the
checkpoint (byte offset, row number and line number of the next record).
"""

import codecs
import contextlib
import csv
import ctypes
import fcntl
import functools
import io
import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import chain, repeat

import orjson

SNIFF_BYTES = 64 * 1024
RAW_LIMIT = 1024
PIPE_BYTES = 1024 * 1024  # the reader pipe's size (Linux's default cap for non-root)
ARRAY_MAX_BYTES = 64 * 1024 * 1024  # a batch as one JSON array (json_array) up to this
ARRAY_CHUNK = 256  # rows held as lists of str before they are encoded (json_array)

# PostgreSQL's binary COPY format: cheaper for the server to read than text (no
# escapes to undo) and as cheap to make. A row is 3 fields, each its length then
# its bytes: task_id (int4), row_number (int8), data (text, UTF-8); COPY_ROW
# packs a row up to its data: (3, 4, task_id, 8, row_number, len(data)).
COPY_HEADER = b"PGCOPY\n\xff\r\n\0" + struct.pack("!ii", 0, 0)
COPY_ROW = struct.Struct("!hiiiqi")
COPY_TRAILER = struct.pack("!h", -1)


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
    # (row_number, JSON array text) pairs; or, read with `copy_task_id`, the same
    # rows as one block of PostgreSQL's binary COPY: task_id, row_number, data; or,
    # read with `json_array`, when no row error falls among them (their numbers
    # follow on, ending at `last_row`), one JSON array of the rows' arrays (bytes).
    rows: list[tuple[int, str]] | bytes = field(default_factory=list)
    count: int = 0  # rows in `rows`
    errors: list[RowError] = field(default_factory=list)
    offset: int = 0  # byte offset of the next record
    last_row: int = 0  # data rows consumed so far
    line_number: int = 1  # line number of the next record
    done: bool = False


def check_encoding(encoding: str) -> str:
    """Return the codec's canonical name; only ASCII-compatible codecs are accepted."""
    try:
        info = codecs.lookup(encoding)
    except (LookupError, ValueError):  # ValueError: a name with a NUL byte
        raise UploadRejected(f"unknown encoding {encoding!r}") from None
    if info.name == "utf-8-sig":
        return "utf-8"  # its BOM is stripped like any UTF-8 BOM
    try:
        # A codec of bytes to bytes (base64, zlib, rot13, ...) raises LookupError
        # here, one that encodes nothing (undefined, idna) UnicodeError.
        ascii_ok = '\n,;\t|"'.encode(info.name, errors="replace") == b'\n,;\t|"'
        codecs.getincrementaldecoder(info.name)().decode(b"a,b\n", final=True)
    except (LookupError, UnicodeError, ValueError, TypeError):
        ascii_ok = False
    if not ascii_ok:
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


def inspect(source, options: CsvOptions) -> Layout:
    """Check the first 64 KB and the header; raise UploadRejected if unusable.

    `source` is a storage location or a binary file-like at the file's start.
    """
    encoding = check_encoding(options.encoding)
    opened = isinstance(source, (str, os.PathLike))
    with _open(source, 0) if opened else contextlib.nullcontext(source) as f:
        head = f.read(SNIFF_BYTES)
        complete = len(head) < SNIFF_BYTES or not f.read(1)
    if not head:
        raise UploadRejected("the file is empty")
    start = len(codecs.BOM_UTF8) if encoding == "utf-8" and head.startswith(codecs.BOM_UTF8) else 0
    if b"\0" in head:
        if _looks_wide(head):
            raise UploadRejected("the file is UTF-16 or UTF-32 text: save it as UTF-8")
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
    # A header is read strictly: a quote left open must not swallow the file.
    reader = csv.reader(lines, delimiter=options.delimiter, strict=options.has_header)
    csv.field_size_limit(options.max_field_kb * 1024)
    try:
        first = next((row for row in reader if row), None)
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise UploadRejected("the header has a quote that is never closed") from None
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


def _looks_wide(head: bytes) -> bool:
    """A UTF-16/32 BOM, or NULs in every other byte: text in a wide encoding."""
    boms = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    if head.startswith(boms):
        return True
    sample = head[:4096]
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    return max(even, odd) > len(sample) // 4 and min(even, odd) < len(sample) // 20


def read_batches(
    location: str,
    options: CsvOptions,
    columns: int,
    offset: int,
    last_row: int,
    line_number: int,
    batch_rows: int,
    batch_seconds: float,
    error_budget: int | None = None,
    copy_task_id: int | None = None,
    json_array: bool = False,
) -> Iterator[Batch]:
    """Stream batches from the record at `offset`, numbering rows after `last_row`.

    Each batch is bounded by `batch_rows` and by `batch_seconds`; the last one
    has `done` set. Blank lines are skipped and not numbered. A batch also ends
    at the error that uses up `error_budget` (errors allowed from here on) plus one.
    With `copy_task_id`, a batch's rows come as one block ready for PostgreSQL's
    COPY (made here, on the reader's core, rather than by the writer). With
    `json_array`, a batch without row errors comes as one JSON array made by one
    `orjson.dumps` (half the cost of one per row), which SQLite's json_each
    inserts without a Python call per row.
    """
    csv.field_size_limit(options.max_field_kb * 1024)
    with _open(location, offset) as raw:
        batcher = _Batcher(raw, options, columns, last_row, line_number, copy_task_id, json_array)
        while True:
            batch = batcher.batch(offset, batch_rows, batch_seconds, error_budget)
            offset = batch.offset
            if error_budget is not None:
                error_budget -= len(batch.errors)
            yield batch
            if batch.done:
                return


def _encoded(rows: list) -> bytes | None:
    """Rows (lists of str) as one JSON array; None if a row holds undecodable bytes."""
    try:
        return orjson.dumps(rows)
    except orjson.JSONEncodeError:
        return None


def _pairs(numbers, chunks: list) -> list[tuple[int, str]]:
    """(row number, JSON text) pairs of the rows in `chunks` (JSON arrays of rows)."""
    rows = chain.from_iterable(orjson.loads(c) for c in chunks)
    return [(n, orjson.dumps(r).decode()) for n, r in zip(numbers, rows, strict=True)]


class _Batcher:
    """Where a read stands between batches: the file, the csv reader over its lines,
    the last row number given, and the lines consumed outside the reader (the rest
    of an oversized field).

    The hot loop is csv.reader over the file's binary readline, each line
    decoded in C (no Python call per line): undecodable bytes arrive as lone
    surrogates, which orjson refuses, so such a row costs nothing until it
    happens. Lines end at LF only, so the file's byte position is exact at every
    record boundary. NUL bytes are looked for once per batch in the raw bytes;
    only a batch that has them is read again row by row.
    """

    def __init__(
        self,
        raw,
        options: CsvOptions,
        columns: int,
        last_row: int,
        line_number: int,
        copy_task_id: int | None,
        json_array: bool = False,
    ):
        self.raw, self.options, self.columns = raw, options, columns
        self.encoding = check_encoding(options.encoding)
        # str(line, encoding, errors) per line, all in C (a partial with keywords
        # costs a third more here).
        self.lines = map(
            str, iter(raw.readline, b""), repeat(self.encoding), repeat("surrogateescape")
        )
        self.reader = csv.reader(self.lines, delimiter=options.delimiter)
        self.row_number, self.lines_before, self.skipped = last_row, line_number - 1, 0
        self.as_copy = copy_task_id is not None
        self.as_array = json_array and not self.as_copy
        self.copy_head = functools.partial(COPY_ROW.pack, 3, 4, copy_task_id or 0, 8)

    def batch(self, start: int, batch_rows: int, seconds: float, budget: int | None) -> Batch:
        """The next batch, from byte `start` (where the previous one ended)."""
        first_row, first_line = self.row_number, self.reader.line_num + self.skipped
        rows, bad, done = self._parse(start, batch_rows, time.monotonic() + seconds, budget)
        offset = self.raw.tell()  # exact: the reader has asked for whole lines only
        chunk = self.raw.pread(offset - start, start)
        if b"\0" in chunk:  # rare: read this batch again line by line
            rows, bad = self._reparse(chunk, first_row, first_line)
        elif self.as_array:
            rows, bad = self._as_array(rows, bad, chunk, first_row, first_line)
        count = len(rows) if isinstance(rows, list) else self.row_number - first_row
        batch = Batch(rows, count, offset=offset, last_row=self.row_number, done=done)
        batch.line_number = self.lines_before + self.reader.line_num + self.skipped + 1
        if self.as_copy:
            batch.rows = b"".join([COPY_HEADER, *rows, COPY_TRAILER])
        if bad:
            batch.errors = _row_errors(bad, chunk, first_line, self.lines_before, self.encoding)
        return batch

    def _parse(self, start: int, batch_rows: int, deadline: float, budget: int | None):
        """(rows, bad rows, at the end): the hot loop, in one function and in locals
        (a call or an attribute per row costs)."""
        reader, columns, as_copy, as_array = self.reader, self.columns, self.as_copy, self.as_array
        dumps, encode_error, monotonic = orjson.dumps, orjson.JSONEncodeError, time.monotonic
        copy_head, row_number, skipped = self.copy_head, self.row_number, self.skipped
        first_line = reader.line_num + skipped
        rows, bad, done = [], [], False
        chunks = []  # json_array: the rows so far, encoded ARRAY_CHUNK or more at a time
        end = row_number + batch_rows  # rows and bad rows both take a number
        while row_number < end:
            line = reader.line_num + skipped
            try:
                row = next(reader, None)
            except csv.Error as exc:
                reason, more = self._malformed(exc, start, line - first_line)
                skipped += more
            else:
                if row is None:
                    done = True
                    break
                if not row:
                    continue  # a blank line
                if len(row) == columns:
                    try:
                        if as_array:  # encoded a chunk at a time, below
                            rows.append(row)
                        elif as_copy:
                            data = dumps(row)
                            rows.append(copy_head(row_number + 1, len(data)) + data)
                        else:
                            rows.append((row_number + 1, dumps(row).decode()))
                        row_number += 1
                        if not row_number & 63:
                            if as_array and len(rows) >= ARRAY_CHUNK:
                                chunks.append(_encoded(rows))
                                rows = []
                            if monotonic() > deadline:
                                break
                        continue
                    except encode_error:
                        reason = f"row is not valid {self.encoding} text"
                else:
                    reason = f"expected {columns} fields, found {len(row)}"
            row_number += 1
            bad.append((row_number, line, reader.line_num + skipped, reason))
            if budget is not None and len(bad) > budget:
                break  # past max_errors: this checkpoint fails the task
        self.row_number, self.skipped = row_number, skipped
        if as_array:
            return [*chunks, _encoded(rows)], bad, done
        return rows, bad, done

    def _as_array(self, chunks: list, bad: list, chunk: bytes, first_row: int, first_line: int):
        """(rows, bad) of a batch encoded as JSON arrays of rows (`chunks`, None for
        one orjson refused): one JSON array when its rows' numbers follow on, else
        (row_number, JSON text) pairs."""
        if None in chunks:  # undecodable bytes: find the rows they are in
            return self._reparse(chunk, first_row, first_line)
        if bad:  # numbered around the row errors: pairs, one by one (rare)
            skip = {b[0] for b in bad}
            numbers = [n for n in range(first_row + 1, self.row_number + 1) if n not in skip]
            return _pairs(numbers, chunks), bad
        block = b"[" + b",".join([c[1:-1] for c in chunks if len(c) > 2]) + b"]"
        if len(block) > ARRAY_MAX_BYTES:  # far below SQLite's 1 GB limit on a value
            return _pairs(range(first_row + 1, self.row_number + 1), chunks), bad
        return block, bad

    def _malformed(self, exc: csv.Error, start: int, record_line: int) -> tuple[str, int]:
        """(reason, lines consumed past the reader) for a record csv refused."""
        if "field limit" not in str(exc):
            return f"malformed CSV: {exc}", 0
        reason = f"a field is over the {self.options.max_field_kb} KB limit"
        return reason, _skip_open_quote(self.raw, self.lines, start, record_line)

    def _reparse(self, chunk: bytes, first_row: int, first_line: int):
        """The batch's rows and bad rows again, from its bytes, NUL bytes found."""
        rows, bad = _reparse(
            chunk, self.options, self.encoding, self.columns, first_row, first_line
        )
        if self.as_copy:
            head = self.copy_head
            rows = [head(n, len(d)) + d for n, d in ((n, d.encode()) for n, d in rows)]
        return rows, bad


def _open(location: str, offset: int):
    """The file or object at `location`, read from byte `offset` (app.core.storage):
    a seek on disk, a ranged GET in object storage; `pread` reads passed bytes again."""
    from app.core.storage import open_range

    return open_range(location, offset)


def _skip_open_quote(raw, lines, start: int, record_line: int) -> int:
    """After a field over the limit: if it is a quoted field still open, consume
    the lines up to its closing quote (they belong to the same bad record).

    Returns the number of lines consumed. `record_line` is the record's first
    line counted from the batch start at byte `start`.
    """
    so_far = raw.pread(raw.tell() - start, start).split(b"\n")
    quotes = sum(part.count(b'"') for part in so_far[record_line:])
    consumed = 0
    while quotes % 2:
        line = next(lines, None)
        if line is None:
            break
        consumed += 1
        quotes += line.count('"')
    return consumed


def _reparse(chunk: bytes, options, encoding: str, columns: int, last_row: int, first_line: int):
    """Parse a batch's bytes again, tracking each line, to find rows holding NUL bytes."""
    lines = _Lines(io.BytesIO(chunk), encoding, 0, first_line + 1)
    reader = csv.reader(lines, delimiter=options.delimiter)
    rows, bad, number = [], [], last_row
    while True:
        line, lines.bad = lines.line, None
        try:
            row = next(reader, None)
        except csv.Error as exc:
            reason = f"malformed CSV: {exc}"
        else:
            if row is None:
                return rows, bad
            if not row and lines.bad is None:
                continue
            reason = lines.bad
            if reason is None and len(row) != columns:
                reason = f"expected {columns} fields, found {len(row)}"
            if reason is None:
                number += 1
                rows.append((number, orjson.dumps(row).decode()))
                continue
        number += 1
        bad.append((number, line, lines.line, reason))


def _row_errors(bad: list, chunk: bytes, first_line: int, lines_before: int, encoding: str):
    """RowErrors with line numbers and raw text (cut at 1 KB) from the batch's bytes."""
    lines = chunk.split(b"\n")
    errors = []
    for number, line, end, reason in bad:
        piece = b"\n".join(lines[line - first_line : end - first_line])
        if end - first_line < len(lines):
            piece += b"\n"
        raw = piece[:RAW_LIMIT].decode(encoding, errors="replace").replace("\0", "\\0")
        errors.append(RowError(number, lines_before + line + 1, raw, reason))
    return errors


# -- the reader as a child process: parsing on one core, writing on the other --


FRAME = struct.Struct("!Q")  # each message from the child: its length, then its pickle


def _serve(args: dict, out) -> None:
    """Write each batch to `out` as a framed pickled tuple; ('error', message) on failure."""

    def send(item) -> None:
        data = pickle.dumps(item, 5)
        out.write(FRAME.pack(len(data)))
        out.write(data)

    try:
        options = CsvOptions(**args.pop("options"))
        for b in read_batches(options=options, **args):
            errors = [(e.row_number, e.line_number, e.raw, e.reason) for e in b.errors]
            send(("batch", b.rows, b.count, errors, b.offset, b.last_row, b.line_number, b.done))
            out.flush()
    except Exception as exc:  # reported to the worker, which fails the task with it
        send(("error", f"{type(exc).__name__}: {exc}"))
    out.flush()


class _Frames:
    """Messages from the child's pipe, each within `tick` seconds or None meanwhile."""

    def __init__(self, fd: int, tick: float):
        self.fd, self.tick, self.buf = fd, tick, bytearray()

    def next(self):
        """The next message, None if none is complete within a tick; EOFError at the end."""
        deadline = time.monotonic() + self.tick
        while True:
            if len(self.buf) >= FRAME.size:
                end = FRAME.size + FRAME.unpack_from(self.buf)[0]
                if len(self.buf) >= end:
                    with memoryview(self.buf) as view, view[FRAME.size : end] as frame:
                        item = pickle.loads(frame)
                    del self.buf[:end]  # after the views are released: a bytearray
                    # with a view on it cannot shrink
                    return item
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            data = os.read(self.fd, PIPE_BYTES)
            if not data:
                raise EOFError
            self.buf += data


def read_batches_in_child(options: CsvOptions, tick: float = 0.01, **args) -> Iterator:
    """read_batches, run by a child process that dies with its parent.

    Python parses CSV on one core; the database writes on the other. Threads
    would share one GIL, a child does not. Yields None whenever no batch came
    within `tick` seconds (the child starting, or parsing), so that the caller
    can look at its task meanwhile: a pause never waits for the reader.
    """
    spec = json.dumps({**args, "options": asdict(options), "parent": os.getpid()})
    # No preexec_fn: without one, subprocess starts the child with vfork, a few ms
    # even from a large worker; a fork copies the worker's page tables first (about
    # 100 ms on a busy machine, a pause's wait). The child ties its life to ours.
    proc = subprocess.Popen([sys.executable, __file__, spec], stdout=subprocess.PIPE)
    try:
        # Room for a whole batch or two in the pipe: the reader parses the next
        # batch while this process waits on the database (64 KB would hold it back).
        with contextlib.suppress(OSError):
            fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        frames = _Frames(proc.stdout.fileno(), tick)
        while True:
            try:
                item = frames.next()
            except EOFError:
                raise RuntimeError(f"CSV reader exited with code {proc.wait()}") from None
            if item is None:
                yield None
                continue
            if item[0] == "error":
                raise RuntimeError(item[1])
            _, rows, count, errors, offset, last_row, line_number, done = item
            errors = [RowError(*e) for e in errors]
            yield Batch(rows, count, errors, offset, last_row, line_number, done)
            if done:
                return
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def die_with_parent() -> None:
    """In a child (Linux): SIGTERM it when its parent dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _bare_app_package() -> None:
    """Make `app.*` importable in the child without running app/__init__.py, which
    imports Flask and Celery (1.5 s); the child needs only app.core.storage."""
    import types

    package = types.ModuleType("app")  # app/kinds/imports/parser.py -> app/
    package.__path__ = [os.path.dirname(os.path.dirname(os.path.dirname(__file__)))]
    sys.modules.setdefault("app", package)


if __name__ == "__main__":
    _bare_app_package()
    spec = json.loads(sys.argv[1])
    die_with_parent()
    if os.getppid() != spec.pop("parent"):
        sys.exit(1)  # the parent died before the line above: no signal will come
    _serve(spec, sys.stdout.buffer)
