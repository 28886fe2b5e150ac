"""Bounded work per request: linear header unions, an export width cap, list pages
bounded in bytes, no header in list items, and finished exports that expire."""

import os
import time

import orjson
import pytest
from sqlalchemy import insert, update

from app.core.models import CsvEntry, Task
from app.kinds.exports.reader import Source
from tests.helpers import task, upload, wait_for, wait_status

T = Task.__table__


def wide_import(app, columns: list[str], rows: int = 0) -> int:
    """An import task (COMPLETED) with this header and `rows` rows, written straight to SQL."""
    store = app.extensions["store"]
    task_id = store.create_task(
        kind="import",
        filename="wide.csv",
        header=orjson.dumps(columns).decode(),
        rows_imported=rows or 1,
        last_row=rows or 1,
    )
    with store.tx() as conn:
        conn.execute(update(T).where(T.c.id == task_id).values(status="COMPLETED"))
        if rows:
            values = orjson.dumps([str(i) * 3 for i in range(len(columns))]).decode()
            conn.execute(
                insert(CsvEntry.__table__),
                [{"task_id": task_id, "row_number": n, "data": values} for n in range(1, rows + 1)],
            )
    return task_id


@pytest.mark.timeout(120)  # a generous deadline: list scans took minutes here
def test_header_union_is_linear_and_the_width_is_capped(app, client):
    for k in range(3):
        wide_import(app, [f"t{k}c{i}" for i in range(30_000)])
    r = client.post("/exports", json={})
    assert r.status_code == 400, r.get_data(as_text=True)[:300]
    assert "EXPORT_MAX_COLUMNS" in r.get_json()["error"]["message"]
    app.config["EXPORT_MAX_COLUMNS"] = 100_000
    r = client.post("/exports", json={})
    assert r.status_code == 202, r.get_data(as_text=True)[:300]
    assert len(task(client, r.get_json()["id"])["header"]) == 90_000


class Name(str):
    """A column name that counts how often it is compared (list scans compare a lot)."""

    compared = 0

    def __eq__(self, other):
        Name.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_an_export_source_arranges_columns_with_linear_name_lookups():
    n = 4_000
    header = [Name(f"c{i}") for i in range(n)]
    names = [Name(f"c{i}") for i in range(0, n, 2)]  # equal, not the same objects
    Name.compared = 0
    source = Source({"id": 1, "bound": 1, "date": None}, names, header)
    assert Name.compared <= 4 * n, Name.compared  # a list scan: about n * n / 2
    row = source.arrange([f"v{i}" for i in range(0, n, 2)])
    assert row[:4] == ("v0", "", "v2", "") and len(row) == n


def test_width_cap_counts_the_union(app, client):
    app.config["EXPORT_MAX_COLUMNS"] = 4
    a = wide_import(app, ["a", "b", "c"])
    wide_import(app, ["c", "d"])
    assert client.post("/exports", json={"task_id": a}).status_code == 202
    assert client.post("/exports", json={}).status_code == 202  # a, b, c, d: four
    wide_import(app, ["e"])
    r = client.post("/exports", json={})
    assert r.status_code == 400 and "4 columns" in r.get_json()["error"]["message"]


def walk(client, path: str, key: str) -> list[list]:
    """Every page of a list, following `next`."""
    pages = []
    while path:
        body = client.get(path).get_json()
        pages.append(body[key])
        path = body["next"]
    return pages


def test_entry_pages_are_bounded_in_bytes_and_next_continues(app, client):
    app.config["PAGE_MAX_BYTES"] = 20_000
    wide = wide_import(app, [f"column_{i}" for i in range(200)], rows=30)
    r = client.get(f"/csv_entries?task_id={wide}&limit=1000")
    assert len(r.data) < 2 * 20_000 and 0 < len(r.get_json()["entries"]) < 30
    pages = walk(client, f"/csv_entries?task_id={wide}&limit=1000", "entries")
    assert len(pages) > 2
    numbers = [e["row_number"] for page in pages for e in page]
    assert numbers == list(range(1, 31))  # each row once, in order
    # Across tasks too (the cursor is the key (task_id, row_number)).
    pages = walk(client, "/csv_entries?limit=1000", "entries")
    assert [e["row_number"] for page in pages for e in page] == list(range(1, 31))
    # One entry bigger than the budget still makes a page of one.
    app.config["PAGE_MAX_BYTES"] = 10
    assert all(len(p) == 1 for p in walk(client, f"/csv_entries?task_id={wide}", "entries"))


def test_task_lists_carry_no_header_and_are_bounded_in_bytes(app, client):
    ids = [wide_import(app, [f"c{i}" for i in range(50)]) for _ in range(5)]
    listed = client.get("/tasks").get_json()["tasks"]
    assert [t["id"] for t in listed] == ids[::-1]
    assert all("header" not in t for t in listed)
    assert task(client, ids[0])["header"] == [f"c{i}" for i in range(50)]
    app.config["PAGE_MAX_BYTES"] = 1_000  # about one task
    pages = walk(client, "/tasks?limit=100", "tasks")
    assert len(pages) >= 3 and [t["id"] for p in pages for t in p] == ids[::-1]


def test_finished_exports_expire(app, client, start_worker, tmp_path):
    ttl_h = 1.5 / 3600  # a second and a half
    start_worker(EXPORT_TTL_HOURS=ttl_h)
    app.config["EXPORT_TTL_HOURS"] = ttl_h
    csv = tmp_path / "a.csv"
    csv.write_text("a,b\n1,2\n3,4\n")
    imported = upload(client, csv).get_json()["id"]
    wait_status(client, imported, "COMPLETED")
    assert task(client, imported).get("expires_at") is None  # an import does not expire
    export = client.post("/exports", json={"task_id": imported}).get_json()["id"]
    done = wait_status(client, export, "COMPLETED")
    finished = time.mktime(time.strptime(done["finished_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    expires = time.mktime(time.strptime(done["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert 1 <= expires - finished <= 2
    folder = os.path.join(app.config["DATA_DIR"], "exports")
    wait_for(lambda: not os.listdir(folder), 30, "the worker's sweep to remove the file")
    r = client.get(f"/tasks/{export}/download")
    assert r.status_code == 410, r.get_data(as_text=True)
    assert r.get_json()["error"]["code"] == 410
    assert task(client, export)["status"] == "COMPLETED"
