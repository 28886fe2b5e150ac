"""The CSV reader alone: offsets, numbering, validation (no app, no database)."""

import csv
import io
import struct

import orjson
import pytest

from app.kinds.imports.parser import CsvOptions, UploadRejected, inspect, read_batches


def write(tmp_path, content: bytes, name="f.csv"):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


DEFAULT = CsvOptions()


def read_all(path, options=DEFAULT, offset=None, last_row=0, line=None, batch_rows=3):
    layout = inspect(path, options)
    batches = list(
        read_batches(
            path,
            options,
            len(layout.header),
            layout.data_offset if offset is None else offset,
            last_row,
            layout.data_line if line is None else line,
            batch_rows,
            10.0,
        )
    )
    rows = [(n, orjson.loads(d)) for b in batches for n, d in b.rows]
    errors = [e for b in batches for e in b.errors]
    return layout, batches, rows, errors


def from_binary_copy(block: bytes, task_id: int, count: int) -> list:
    """Decode a batch made for PostgreSQL's binary COPY, checking its framing."""
    assert block.startswith(b"PGCOPY\n\xff\r\n\0" + bytes(8)) and block.endswith(b"\xff\xff")
    rows, at = [], 19
    while at < len(block) - 2:
        fields, n4, tid, n8, number, size = struct.unpack_from("!hiiiqi", block, at)
        assert (fields, n4, tid, n8) == (3, 4, task_id, 8)
        at += struct.calcsize("!hiiiqi")
        rows.append((number, orjson.loads(block[at : at + size].decode("utf-8"))))
        at += size
    assert at == len(block) - 2 and len(rows) == count
    return rows


def from_json_array(batch) -> list:
    """A batch read with json_array: its rows, numbered as SQLite's json_each numbers them."""
    if not isinstance(batch.rows, bytes):
        return [(n, orjson.loads(d)) for n, d in batch.rows]
    values = orjson.loads(batch.rows)
    assert len(values) == batch.count
    return list(enumerate(values, batch.last_row - batch.count + 1))


@pytest.mark.parametrize("flaw", ["none", "ragged", "undecodable", "both", "oversized"])
def test_json_array_batches_hold_the_same_rows(tmp_path, flaw, monkeypatch):
    """SQLite's form of a batch (rows encoded ARRAY_CHUNK at a time, joined into one
    JSON array): the same rows, numbers, errors and checkpoints as the plain form,
    whether a batch holds a row error (pairs), undecodable bytes (read again), is
    past ARRAY_MAX_BYTES (pairs) or none of these."""
    from app.kinds.imports import parser

    if flaw == "oversized":
        monkeypatch.setattr(parser, "ARRAY_MAX_BYTES", 1000)
    lines = [b"a,b"] + [b"%d,x%d" % (i, i) for i in range(1, 3001)]
    if flaw in ("ragged", "both"):
        lines[700] = b"only-one"
    if flaw in ("undecodable", "both"):
        lines[1900] = b"1900,\xff"
    path = write(tmp_path, b"\n".join(lines) + b"\n")
    plain = list(read_batches(path, DEFAULT, 2, 4, 0, 2, 1000, 10.0))
    arrays = list(read_batches(path, DEFAULT, 2, 4, 0, 2, 1000, 10.0, json_array=True))
    assert [r for b in arrays for r in from_json_array(b)] == [
        (n, orjson.loads(d)) for b in plain for n, d in b.rows
    ]
    marks = [(b.count, b.errors, b.offset, b.last_row, b.line_number, b.done) for b in plain]
    assert [
        (b.count, b.errors, b.offset, b.last_row, b.line_number, b.done) for b in arrays
    ] == marks
    # One JSON array exactly where a batch has no row error; pairs (or a batch read
    # again for its undecodable bytes) where it has.
    small = [not b.count or flaw != "oversized" for b in plain]  # "[]" is under any limit
    assert [isinstance(b.rows, bytes) for b in arrays] == [
        not b.errors and fits for b, fits in zip(plain, small, strict=True)
    ]
    assert sum(bool(b.errors) for b in plain) == {"none": 0, "oversized": 0, "both": 2}.get(flaw, 1)


@pytest.mark.parametrize(
    "content, good",
    [
        (b'a,b\n1,2\n\n"x\ny",\\\t\n"p\r\nq",\xc3\xa9\xe2\x82\xac\n', 3),
        (b"a,b\n1,2\nonly-one\n3,\x00\n\xff,4\n5,6\n", 2),  # ragged, NUL, undecodable
    ],
)
def test_binary_copy_batches_hold_the_same_rows(tmp_path, content, good):
    """The PostgreSQL form of a batch: same rows, numbers and errors as the plain one."""
    path = write(tmp_path, content)
    plain = list(read_batches(path, DEFAULT, 2, 4, 0, 2, 2, 10.0))
    copied = list(read_batches(path, DEFAULT, 2, 4, 0, 2, 2, 10.0, copy_task_id=70000))
    rows = [(n, orjson.loads(d)) for b in plain for n, d in b.rows]
    assert len(rows) == good and [b.count for b in copied] == [len(b.rows) for b in plain]
    assert [r for b in copied for r in from_binary_copy(b.rows, 70000, b.count)] == rows
    assert [b.errors for b in copied] == [b.errors for b in plain]


def test_rows_numbered_from_one_and_blank_lines_skipped(tmp_path):
    path = write(tmp_path, b"a,b\n1,2\n\n3,4\r\n\r\n5,6")
    layout, batches, rows, errors = read_all(path)
    assert layout.header == ["a", "b"]
    assert rows == [(1, ["1", "2"]), (2, ["3", "4"]), (3, ["5", "6"])]
    assert errors == [] and batches[-1].done and batches[-1].last_row == 3


def test_quoted_newlines_keep_record_boundaries(tmp_path):
    path = write(tmp_path, b'a,b\n"x\ny",1\n"p\r\nq",2\nz,3\n')
    _, batches, rows, _ = read_all(path, batch_rows=1)
    assert rows == [(1, ["x\ny", "1"]), (2, ["p\r\nq", "2"]), (3, ["z", "3"])]
    # Every checkpoint offset is a record boundary: resuming there gives the rest.
    for i, b in enumerate(batches[:-1]):
        _, _, rest, _ = read_all(path, offset=b.offset, last_row=b.last_row, line=b.line_number)
        assert rest == rows[i + 1 :]


def test_resume_reads_from_the_offset_not_the_start(tmp_path):
    """Bytes before the checkpoint are never read: here they are not even CSV."""
    good = b"a,b\n1,2\n3,4\n5,6\n"
    path = write(tmp_path, good)
    _, batches, rows, _ = read_all(path, batch_rows=1)
    first = batches[0]
    # Overwrite everything before the checkpoint with garbage of the same length.
    garbage = b"\0" * first.offset
    with open(path, "r+b") as f:
        f.write(garbage)
    rest = list(
        read_batches(
            path, CsvOptions(), 2, first.offset, first.last_row, first.line_number, 10, 10.0
        )
    )
    resumed = [(n, orjson.loads(d)) for b in rest for n, d in b.rows]
    assert resumed == rows[1:] and not any(b.errors for b in rest)


def test_bom_is_stripped(tmp_path):
    path = write(tmp_path, "\ufeffname,age\nÅsa,3\n".encode())
    layout, _, rows, _ = read_all(path)
    assert layout.header == ["name", "age"] and rows == [(1, ["Åsa", "3"])]


def test_headerless_columns_are_named(tmp_path):
    path = write(tmp_path, "\ufeff1,2,3\n4,5,6\n".encode())
    layout, _, rows, _ = read_all(path, CsvOptions(has_header=False))
    assert layout.header == ["col1", "col2", "col3"]
    assert rows == [(1, ["1", "2", "3"]), (2, ["4", "5", "6"])]


def read_data(path, columns, offset, options=DEFAULT):
    """Read rows past the first 64 KB's checks (as the worker does)."""
    batches = list(read_batches(path, options, columns, offset, 0, 2, 100, 10.0))
    rows = [(n, orjson.loads(d)) for b in batches for n, d in b.rows]
    return rows, [e for b in batches for e in b.errors]


def test_ragged_nul_and_undecodable_rows_are_errors_with_lines(tmp_path):
    path = write(tmp_path, b"a,b\n1,2\n3\n4,\x005\n\xff\xfe,6\n7,8\n")
    rows, errors = read_data(path, 2, 4)
    assert rows == [(1, ["1", "2"]), (5, ["7", "8"])]
    assert [(e.row_number, e.line_number) for e in errors] == [(2, 3), (3, 4), (4, 5)]
    assert "expected 2 fields, found 1" in errors[0].reason
    assert "NUL" in errors[1].reason and "\0" not in errors[1].raw
    assert "utf-8" in errors[2].reason


def test_field_over_the_limit_is_a_row_error(tmp_path):
    big = b"x" * 3000
    path = write(tmp_path, b"a,b\n1,2\n" + big + b",3\n4,5\n")
    rows, errors = read_data(path, 2, 4, CsvOptions(max_field_kb=1))
    assert [n for n, _ in rows] == [1, 3] and [e.row_number for e in errors] == [2]
    assert len(errors[0].raw) <= 1024


def test_header_only_file_has_no_rows(tmp_path):
    path = write(tmp_path, b"a,b\n")
    layout, batches, rows, _ = read_all(path)
    assert rows == [] and batches[-1].done and layout.data_offset == 4


def test_delimiter_and_latin1(tmp_path):
    path = write(tmp_path, "a;b\nç;1\n".encode("latin-1"))
    _, _, rows, errors = read_all(path, CsvOptions(delimiter=";", encoding="latin-1"))
    assert rows == [(1, ["ç", "1"])] and errors == []


@pytest.mark.parametrize(
    "content, options, message",
    [
        (b"", CsvOptions(), "empty"),
        (b"a,b\n\x00\x01\x02", CsvOptions(), "NUL"),
        (b"a,b\n\xff\xfe\n", CsvOptions(), "not valid utf-8"),
        (b"a,b\r1,2\r", CsvOptions(), "bare CR"),
        (b"a,,c\n1,2,3\n", CsvOptions(), "empty name"),
        (b"a,b,a\n1,2,3\n", CsvOptions(), "duplicate"),
        (b"\n\n\n", CsvOptions(), "no complete row"),
        (b"a,b\n", CsvOptions(encoding="utf-16"), "not supported"),
        (b"a,b\n", CsvOptions(encoding="klingon"), "unknown encoding"),
    ],
)
def test_unusable_files_are_rejected(tmp_path, content, options, message):
    path = write(tmp_path, content)
    with pytest.raises(UploadRejected, match=message):
        inspect(path, options)


def test_batches_are_bounded_by_rows(tmp_path):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["n"])
    w.writerows([[i] for i in range(100)])
    path = write(tmp_path, buf.getvalue().encode())
    _, batches, rows, _ = read_all(path, batch_rows=7)
    assert len(rows) == 100 and all(len(b.rows) <= 7 for b in batches)


@pytest.mark.slow  # reads 20x a file of rows twice under tracemalloc
def test_memory_does_not_grow_with_the_file(tmp_path):
    """Constant memory: peak allocation reading 20x more rows stays the same."""
    import tracemalloc

    from sample_data.generate import write_csv

    def peak(rows):
        path = str(tmp_path / f"m{rows}.csv")
        write_csv(path, rows, seed=1)
        layout = inspect(path, CsvOptions())
        tracemalloc.start()
        for _ in read_batches(path, CsvOptions(), 13, layout.data_offset, 0, 2, 1000, 10.0):
            pass
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(5_000), peak(100_000)
    assert large < small * 1.5 + 512 * 1024, (small, large)


def test_a_nul_in_the_last_batch_is_still_an_error(tmp_path):
    path = write(tmp_path, b"a,b\n1,2\n3,\x004\n")
    rows, errors = read_data(path, 2, 4)
    assert rows == [(1, ["1", "2"])]
    assert [(e.row_number, e.line_number, e.raw) for e in errors] == [(2, 3, "3,\\04\n")]
