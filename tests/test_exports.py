"""Exports with real workers: exact files across pauses, crashes and terminates.

Every check compares the downloaded file with rows computed here, independently,
from the source CSV (csv module + datetime), never with the service's own code.
"""

import csv
import io
import json
import os
from datetime import date, datetime
from itertools import chain, zip_longest
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text

from tests.helpers import task, upload, wait_for, wait_rows, wait_status, write_rows

N = 300_000
SLOW = 100_000  # rows/s: exports long enough to act on, short enough for CI


@pytest.fixture
def big_csv(tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "export300k.csv"
    if not path.exists():
        write_rows(path, N, seed=3)
    return path


def as_date(value: str) -> date | None:
    for fmt in ("%Y-%m-%d", "%m/%d/%Y"):
        try:
            return datetime.strptime(value.strip(), fmt).date()
        except ValueError:
            pass
    return None


def source_rows(path: Path, column=None, start=None, end=None, limit=None):
    """(header, rows) of a CSV, rows kept when `column` is a date within [start, end].

    A row of the wrong width (a row error for the import) is left out.
    """
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    lo, hi = as_date(start) if start else date.min, as_date(end) if end else date.max

    def rows():
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            next(reader)
            for n, row in enumerate(reader):
                if limit is not None and n >= limit:
                    return
                if len(row) != len(header):
                    continue
                if column is not None:
                    day = as_date(row[header.index(column)])
                    if day is None or not lo <= day <= hi:
                        continue
                yield row

    return header, rows()


def downloaded(client, tid):
    """(header, rows) of an export's file, fetched through GET /tasks/<id>/download."""
    response = client.get(f"/tasks/{tid}/download")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.mimetype == "text/csv"
    assert f"export-{tid}.csv" in response.headers["Content-Disposition"]
    content = response.get_data(as_text=True)
    response.close()  # closes the file send_file opened
    reader = csv.reader(io.StringIO(content, newline=""))
    return next(reader, None), reader


def assert_same_rows(got, expected) -> int:
    """Both row streams are equal, in order, each row once; return their length."""
    count = 0
    for count, (a, b) in enumerate(zip_longest(got, expected), start=1):
        assert a == b, f"row {count}: downloaded {a!r}, expected {b!r}"
    return count


def export(client, **body):
    response = client.post("/exports", json=body)
    assert response.status_code == 202, response.get_json()
    tid = response.get_json()["id"]
    assert response.headers["Location"] == f"/tasks/{tid}"
    assert response.get_json()["kind"] == "export"
    return tid


def export_files(app, tid) -> list[str]:
    folder = Path(app.config["DATA_DIR"]) / "exports"
    return sorted(p.name for p in folder.glob(f"{tid}.csv*"))


def imported(client, path: Path, **form) -> int:
    tid = upload(client, path, **form).get_json()["id"]
    wait_status(client, tid, "COMPLETED")
    return tid


def test_date_filters_in_both_formats_and_the_union_of_headers(app, client, start_worker, tmp_path):
    start_worker()
    a = tmp_path / "a.csv"
    a.write_text(
        "id,date,name\n1,2017-08-01,x\n2,08/15/2017,y\n3,not a date,z\n4,2017-12-31,w\n"
        '5,01/01/2018,v\n6,02/30/2017,bad day\n7,,empty\n8,07/31/2017,"q, r"\n'
    )
    b = tmp_path / "b.csv"
    b.write_text('name,date,extra\nm,2017-09-09,"line\nbreak"\nn,2016-01-01,o\n')
    c = tmp_path / "c.csv"
    c.write_text("id,other\n9,2017-10-10\n")
    ta = imported(client, a)
    imported(client, b)
    # An import terminated between b and c: none of its rows is exported.
    gap = imported(client, write_rows(tmp_path / "gap.csv", 5_000))
    tc = imported(client, c)
    client.post(f"/terminate/{gap}")
    wait_status(client, gap, "REVOKED")

    window = {"column": "date", "from": "2017-08-01", "to": "12/31/2017"}
    both = export(client, **window)
    one = export(client, task_id=ta, column="date", **{"from": "08/02/2017", "to": "2017-12-30"})
    open_end = export(client, task_id=ta, column="date", **{"from": "2017-12-31"})
    none = export(client, task_id=ta, column="date", **{"from": "2030-01-01"})
    everything = export(client)
    for tid in (both, one, open_end, none, everything):
        wait_status(client, tid, "COMPLETED")

    header, rows = downloaded(client, both)  # c has no "date": left out, header too
    assert header == ["id", "date", "name", "extra"]
    assert list(rows) == [
        ["1", "2017-08-01", "x", ""],
        ["2", "08/15/2017", "y", ""],
        ["4", "2017-12-31", "w", ""],
        ["", "2017-09-09", "m", "line\nbreak"],
    ]
    assert task(client, both)["rows_total"] == 4 and task(client, both)["progress"] == 1
    assert list(downloaded(client, one)[1]) == [["2", "08/15/2017", "y"]]
    assert list(downloaded(client, open_end)[1]) == [
        ["4", "2017-12-31", "w"],
        ["5", "01/01/2018", "v"],
    ]
    header, rows = downloaded(client, none)
    assert header == ["id", "date", "name"] and list(rows) == []
    assert task(client, none)["rows_total"] == 0

    header, rows = downloaded(client, everything)
    assert header == ["id", "date", "name", "extra", "other"]
    expected = []
    for path in (a, b, c):
        names, src = source_rows(path)
        expected += [[dict(zip(names, r, strict=True)).get(h, "") for h in header] for r in src]
    assert_same_rows(rows, expected)
    assert tc != gap  # c, imported after the gap, is in; the gap's rows are not

    # The run died between COMPLETED and the rename: the download finishes the job.
    folder = Path(app.config["DATA_DIR"]) / "exports"
    os.replace(folder / f"{one}.csv", folder / f"{one}.csv.part")
    assert list(downloaded(client, one)[1]) == [["2", "08/15/2017", "y"]]
    assert export_files(app, one) == [f"{one}.csv"]


def with_bad_rows(path: Path, after: int, count: int) -> Path:
    """The CSV again with `count` one-field lines (row errors) after its first `after` rows."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    rows[after + 1 : after + 1] = [["bad"]] * count
    out = path.with_name(f"{path.stem}-bad.csv")
    with open(out, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return out


def test_an_export_of_several_imports_writes_them_task_by_task(client, start_worker, tmp_path):
    start_worker(IMPORT_MAX_ROWS_PER_S=20_000)  # two processes: a and b import side by side
    a = write_rows(tmp_path / "a.csv", 15_000, seed=11)
    b = write_rows(tmp_path / "b.csv", 15_000, seed=12)
    # c's rows 3,001 to 5,500 are row errors: whole pages of its row numbers hold no row.
    c = with_bad_rows(write_rows(tmp_path / "c.csv", 6_000, seed=13), 3_000, 2_500)
    ids = [upload(client, p, max_errors=10_000).get_json()["id"] for p in (a, b, c)]
    for tid in ids:
        wait_status(client, tid, "COMPLETED")
    assert task(client, ids[2])["error_count"] == 2_500

    window = {"column": "date", "from": "2016-03-01", "to": "08/31/2018"}
    kept = ("date", window["from"], window["to"])
    everything, filtered = export(client), export(client, **window)
    only_c = export(client, task_id=ids[2], **window)
    for tid in (everything, filtered, only_c):
        wait_status(client, tid, "COMPLETED")

    header, rows = downloaded(client, everything)
    assert header == source_rows(a)[0]
    n = assert_same_rows(rows, chain(*(source_rows(p)[1] for p in (a, b, c))))
    assert n == 36_000 == task(client, everything)["rows_total"]
    header, rows = downloaded(client, filtered)
    expected = chain(*(source_rows(p, *kept)[1] for p in (a, b, c)))
    n = assert_same_rows(rows, expected)
    assert 10_000 < n < 36_000 and task(client, filtered)["rows_total"] == n
    header, rows = downloaded(client, only_c)
    assert assert_same_rows(rows, source_rows(c, *kept)[1]) == task(client, only_c)["rows_total"]


def part_size(app, tid) -> int:
    return (Path(app.config["DATA_DIR"]) / "exports" / f"{tid}.csv.part").stat().st_size


def wait_cut_back(app, paused: dict) -> None:
    """Nothing past the checkpoint of a PAUSED export, once its run has stopped (the
    pause dropped the batch in hand, written but not committed)."""
    tid, size = paused["id"], paused["bytes_done"]
    wait_for(lambda: part_size(app, tid) == size, 30, f"export {tid} cut back to {size} bytes")


def test_paused_and_resumed_export_writes_each_row_once(app, client, start_worker, big_csv):
    start_worker(IMPORT_MAX_ROWS_PER_S=SLOW)
    src = imported(client, big_csv)
    window = {"column": "date", "from": "03/01/2016", "to": "2019-06-30"}
    tid = export(client, task_id=src, **window)
    mark = 0
    for _ in range(3):
        mark = wait_rows(client, tid, mark + 25_000)["last_row"]
        assert client.post(f"/pause/{tid}").status_code == 202
        paused = wait_status(client, tid, "PAUSED")
        wait_cut_back(app, paused)
        assert paused["rows_imported"] == paused["last_row"] < paused["rows_total"]
        assert 0 < paused["progress"] < 1
        assert client.post(f"/resume/{tid}").status_code == 202
    done = wait_status(client, tid, "COMPLETED")
    header, rows = downloaded(client, tid)
    expected_header, expected = source_rows(big_csv, "date", window["from"], window["to"])
    assert header == expected_header
    n = assert_same_rows(rows, expected)
    assert 100_000 < n < N
    assert done["rows_imported"] == done["last_row"] == done["rows_total"] == n
    assert done["progress"] == 1 and done["filename"] == f"export-{tid}.csv"
    assert export_files(app, tid) == [f"{tid}.csv"]


def test_an_export_paused_in_each_source_writes_the_file_of_one_never_paused(
    app, client, start_worker, tmp_path
):
    start_worker(IMPORT_MAX_ROWS_PER_S=20_000)
    paths = [write_rows(tmp_path / f"s{i}.csv", 20_000, seed=20 + i) for i in range(3)]
    paths[1] = with_bad_rows(paths[1], 10_000, 3_000)  # row numbers with no row
    for path in paths:
        imported(client, path, max_errors=5_000)
    steady, stopped = export(client), export(client)
    # Paused inside the first source, then inside the second: each resume goes on
    # from a checkpoint within a source and across the boundary after it.
    for mark, boundary in ((3_000, 20_000), (23_000, 40_000)):
        wait_rows(client, stopped, mark)
        assert client.post(f"/pause/{stopped}").status_code == 202
        paused = wait_status(client, stopped, "PAUSED")
        assert mark <= paused["last_row"] < boundary
        wait_cut_back(app, paused)
        assert client.post(f"/resume/{stopped}").status_code == 202
    for tid in (steady, stopped):
        assert wait_status(client, tid, "COMPLETED")["rows_imported"] == 60_000
    response = client.get(f"/tasks/{steady}/download")
    steady_bytes = response.get_data()
    response.close()
    header, rows = downloaded(client, stopped)
    assert assert_same_rows(rows, chain(*(source_rows(p)[1] for p in paths))) == 60_000
    response = client.get(f"/tasks/{stopped}/download")
    assert response.get_data() == steady_bytes
    response.close()


def test_export_whose_worker_is_killed_is_taken_over(app, client, start_worker, big_csv):
    doomed = start_worker(IMPORT_MAX_ROWS_PER_S=SLOW)
    imported(client, big_csv)
    tid = export(client)  # everything: here, the one import
    wait_rows(client, tid, 60_000)
    doomed.kill_group()  # SIGKILL: no checkpoint, no goodbye, maybe bytes past it
    assert task(client, tid)["status"] == "PROCESSING"
    start_worker(IMPORT_MAX_ROWS_PER_S=SLOW, HEARTBEAT_TIMEOUT_S=3)
    done = wait_status(client, tid, "COMPLETED")
    header, rows = downloaded(client, tid)
    expected_header, expected = source_rows(big_csv)
    assert header == expected_header
    assert assert_same_rows(rows, expected) == N == done["rows_total"] == done["rows_imported"]


def test_export_of_an_import_still_running_takes_the_rows_committed_at_its_start(
    client, start_worker, tmp_path
):
    start_worker(IMPORT_MAX_ROWS_PER_S=20_000)
    path = write_rows(tmp_path / "running.csv", 100_000, seed=5)
    src = upload(client, path).get_json()["id"]
    before = wait_rows(client, src, 10_000)["last_row"]
    tid = export(client, task_id=src)
    after = task(client, src)["last_row"]
    done = wait_status(client, tid, "COMPLETED")
    n = done["rows_imported"]
    assert before <= n <= after and done["rows_total"] == n
    header, rows = downloaded(client, tid)
    assert assert_same_rows(rows, source_rows(path, limit=n)[1]) == n
    assert task(client, tid)["rows_imported"] == n  # the import went on; the export did not


def test_terminate_removes_the_file_and_a_terminated_source_fails_an_export(
    app, client, start_worker, tmp_path
):
    start_worker(IMPORT_MAX_ROWS_PER_S=20_000)
    src = imported(client, write_rows(tmp_path / "t.csv", 40_000, seed=2))

    running = export(client, task_id=src)
    wait_rows(client, running, 4_000)
    assert client.post(f"/terminate/{running}").status_code == 202
    wait_status(client, running, "REVOKED")
    small = export(client, task_id=src, column="date", **{"from": "2016-01-01", "to": "01/31/2016"})
    wait_status(client, small, "COMPLETED")
    # The run renames the file just after committing COMPLETED.
    wait_for(lambda: export_files(app, small) == [f"{small}.csv"], 10, "the rename")
    assert client.post(f"/terminate/{small}").status_code == 202
    wait_status(client, small, "REVOKED")
    for tid in (running, small):
        assert export_files(app, tid) == []
        error = client.get(f"/tasks/{tid}/download").get_json()["error"]
        assert error["code"] == 404 and error["status"] == "REVOKED"

    # A source terminated under a (paused) export: the export fails, never lies.
    doomed = export(client, task_id=src)
    wait_rows(client, doomed, 2_000)
    client.post(f"/pause/{doomed}")
    paused = wait_status(client, doomed, "PAUSED")
    wait_cut_back(app, paused)
    client.post(f"/terminate/{src}")
    wait_status(client, src, "REVOKED")
    refused = client.post("/exports", json={"task_id": src})
    assert refused.status_code == 409 and refused.get_json()["error"]["status"] == "REVOKED"
    client.post(f"/resume/{doomed}")
    failed = wait_status(client, doomed, "FAILED")
    assert f"source import {src} was terminated" in failed["error"]
    assert client.get(f"/tasks/{doomed}/download").status_code == 409
    client.post(f"/terminate/{doomed}")
    wait_status(client, doomed, "REVOKED")
    assert export_files(app, doomed) == []


def label(t: int, r: int) -> str:
    """A cell with what JSON escapes: backslashes, quotes, a tab, a newline."""
    return f"{t}-{r}" + ' \\ \\\\ " \t \n é' * (r % 2)


def test_reader_goes_source_by_source_and_resumes_from_any_position(app, engine):
    from app.kinds.exports.reader import Reader, Source

    # Task 5's rows 3 to 5 were row errors, its rows 8 and 9 came after its bound;
    # task 4 is no source; a source with bound 0 had no row yet.
    rows = {2: [1, 2, 3], 4: [1, 2], 5: [1, 2, 6, 7, 8, 9]}
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO csv_entries (task_id, row_number, data) VALUES (:t, :r, :d)"),
            [
                {"t": t, "r": r, "d": orjson.dumps([f"2017-0{r}-0{t}", label(t, r)]).decode()}
                for t, numbers in rows.items()
                for r in numbers
            ],
        )
    names = ["day", "label"]
    specs = [(1, 0), (2, 3), (3, 0), (5, 7), (6, 0)]
    sources = [Source({"id": i, "bound": b, "date": 0}, names, names) for i, b in specs]
    keys = [(2, 1), (2, 2), (2, 3), (5, 1), (5, 2), (5, 6), (5, 7)]
    store = app.extensions["store"]

    def read(reader, at, n, count_only=False):
        """Pages from `at` to the end: (rows, [(position, rows so far)])."""
        got, marks = [], []
        while at < reader.end:
            _src, page, after = reader.page(at, n, count_only)
            assert after > at
            got += page
            at = after
            marks.append((at, len(got)))
        return got, marks

    def blocks(reader, at, n):
        """The JSON texts of reader.block's pages from `at` to the end."""
        texts = []
        while at < reader.end:
            block, count, at = reader.block(at, n)
            lines = block.decode().split("\r\n") if block else []
            assert len(lines) == count
            texts += [f"[{line}]" for line in lines]
        return texts

    for n in (1, 2, 3, 1_000):
        reader = Reader(store, sources, filtered=False)
        assert reader.end == 10
        got, marks = read(reader, 0, n)
        assert [json.loads(data)[1] for data, _day in got] == [label(t, r) for t, r in keys]
        for at, done in marks:  # a run resumed at any checkpoint reads the rest, once
            assert read(reader, at, n)[0] == got[done:]
            assert blocks(reader, at, n) == [data for data, _day in got[done:]]
    counting = Reader(store, sources, filtered=True)  # the database extracts the date
    got, _marks = read(counting, 0, 2, count_only=True)
    assert got == [(None, f"2017-0{r}-0{t}") for t, r in keys]


def error_of(response, code) -> dict:
    assert response.status_code == code, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    return body["error"]


def task_count(engine) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM tasks")).scalar()


def test_bad_requests_are_400_and_create_nothing(client, engine, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,date\n1,2017-08-01\n")
    imp = upload(client, path).get_json()["id"]  # no worker: it stays QUEUED, no rows
    exp = export(client)
    cases = [
        ({"nope": 1}, "nope"),
        ({"task_id": 999_999}, "no task 999999"),
        ({"task_id": exp}, "not an import"),
        ({"task_id": "abc"}, "task_id"),
        ({"task_id": -1}, "task_id"),
        ({"task_id": 2**40}, "task_id"),
        ({"column": "date", "from": "2017-13-01"}, "from"),
        ({"column": "date", "from": "2017-02-30"}, "from"),
        ({"column": "date", "from": "08/01/17"}, "from"),
        ({"column": "date", "to": "2017/08/01"}, "to"),
        ({"column": "date", "to": "yesterday"}, "to"),
        ({"column": "date", "from": 20170801}, "from"),
        ({"column": "date", "from": "2017-12-31", "to": "08/01/2017"}, "after"),
        ({"from": "2017-08-01"}, "column"),
        ({"task_id": imp, "to": "2017-08-01"}, "column"),
        ({"column": ""}, "column"),
        ({"column": 7}, "column"),
        ({"task_id": imp, "column": "when"}, "no column 'when' (it has id, date)"),
        ({"column": "when"}, "no import with rows has a column named 'when'"),
        ([], "input"),
        ("2017", "input"),
    ]
    before = task_count(engine)
    for body, needle in cases:
        error = error_of(client.post("/exports", json=body), 400)
        assert needle in error["message"], (body, error)
    error_of(client.post("/exports", data="{", content_type="application/json"), 400)
    form = client.post("/exports", data={"task_id": str(imp)})  # curl -d without a JSON type
    assert "JSON" in error_of(form, 400)["message"]
    assert task_count(engine) == before

    # Every key is optional: no body at all, or {}, exports everything.
    for response in (client.post("/exports"), client.post("/exports", json={})):
        assert response.status_code == 202 and response.get_json()["kind"] == "export"
        assert response.get_json()["options"] == {
            "task_id": None,
            "column": None,
            "from": None,
            "to": None,
            "raw": False,  # formula-safe by default
        }
    ok = client.post("/exports", json={"task_id": imp, "column": "date", "from": "08/01/2017"})
    assert ok.status_code == 202
    assert ok.get_json()["options"]["from"] == "2017-08-01"  # stored in one format

    assert error_of(client.get("/tasks/999999/download"), 404)
    assert "import" in error_of(client.get(f"/tasks/{imp}/download"), 404)["message"]
    assert error_of(client.get(f"/tasks/{exp}/download"), 409)["status"] == "QUEUED"


def test_part_file_is_cut_back_and_a_stale_holder_cannot_touch_it(tmp_path):
    from app.kinds.exports.outfile import PartFile

    path = str(tmp_path / "1.csv.part")
    first = PartFile(path, 0)
    first.write(b"a,b\r\n1,2\r\n")
    assert first.sync({})["bytes_done"] == 10
    first.write(b"lost past the checkpoint")
    first.f.flush()
    first.close()
    second = PartFile(path, 10)  # a new run: cut back to the checkpoint
    assert Path(path).read_bytes() == b"a,b\r\n1,2\r\n"
    # second stalls holding the lock; the task is handed to a third run.
    third = PartFile(path, 5)
    third.write(b"3,4\r\n")
    third.sync({})
    second.write(b"stale bytes")
    second.sync({})
    second.close()
    third.close()
    assert Path(path).read_bytes() == b"a,b\r\n3,4\r\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.csv.part"]


def test_an_export_with_nothing_to_read_completes_empty(app, client):
    """No import yet: the export has no source at all, and still completes (it used to
    fail on an IndexError)."""
    from tests.test_lifecycle_inprocess import start_run

    response = client.post("/exports", json={})
    assert response.status_code == 202, response.get_json()
    tid = response.get_json()["id"]
    start_run(app, tid).join()
    done = client.get(f"/tasks/{tid}").get_json()
    assert (done["status"], done["rows_imported"], done["error"]) == ("COMPLETED", 0, None)
    with client.get(f"/tasks/{tid}/download") as download:
        assert download.status_code == 200 and download.get_data() == b""


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_pages_read_ahead_come_in_order_each_read_once(depth):
    """_Ahead: every position along the chain is read once, at most `depth` ahead of
    the one asked for; a position off the chain starts the chain again there."""
    import threading

    from app.kinds.exports.job import _Ahead

    reads, lock = [], threading.Lock()
    gate = threading.Barrier(depth)  # `depth` reads in flight at once, or it times out
    first = set(range(0, 3 * depth, 3))

    def read(at):
        with lock:
            reads.append(at)
        if at in first:  # the first `depth` reads are in flight together
            gate.wait(timeout=10)
        return (f"page {at}".encode(), 1, at + 3)

    ahead = _Ahead(read, lambda at: at + 3, 30, depth=depth)
    try:
        at, got = 0, []
        while at < 30:
            lines, _rows, at = ahead(at)
            got.append(lines)
        assert got == [f"page {p}".encode() for p in range(0, 30, 3)]
        assert sorted(reads) == list(range(0, 30, 3))  # none twice, none past the end
        reads.clear()
        assert ahead(7) == (b"page 7", 1, 10)  # off the chain: read then and there
        assert 7 in reads
    finally:
        ahead.close()
