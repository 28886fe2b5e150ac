"""Exports are formula-safe by default; `"raw": true` gives the imported bytes back.

The expected cells are written out here by hand (OWASP's CSV injection rule: a
quote before a cell starting with =, +, -, @, tab or CR; a plain number stays).
"""

import csv
import io
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.kinds.exports import csvrows
from app.kinds.exports.formulas import risky, safe_cell, safe_row
from tests.helpers import upload, wait_status

# (imported cell, exported cell by default)
CASES = [
    ("=1+2", "'=1+2"),
    ('=HYPERLINK("http://x.example","y")', '\'=HYPERLINK("http://x.example","y")'),
    ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
    ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
    ("+", "'+"),
    ("-", "'-"),
    ("-x", "'-x"),
    ("+-1", "'+-1"),
    ("- 1", "'- 1"),
    ("-inf", "'-inf"),
    ("-0x1F", "'-0x1F"),
    ("-1,5", "'-1,5"),
    ("\tx", "'\tx"),
    ("\r=1", "'\r=1"),
    ("-12.5", "-12.5"),  # plain numbers are numbers, not formulas
    ("+3", "+3"),
    ("-1e5", "-1e5"),
    ("-.5", "-.5"),
    ("-1.", "-1."),
    ("1-2", "1-2"),
    ("a=b", "a=b"),
    (" =1", " =1"),
    ("'=1", "'=1"),
    ("", ""),
]


def test_cells_are_escaped_as_the_table_says():
    for cell, expected in CASES:
        assert safe_cell(cell) == expected, cell


def test_the_json_prefilter_never_misses_a_cell_to_escape():
    """risky(row as JSON) is True whenever a cell of the row changes."""
    rnd = random.Random(7)
    alphabet = ['"', ",", "[", "]", "\\", "=", "+", "-", "@", "\t", "\r", "\n", "1", ".", "e", "a"]
    for _ in range(20_000):
        row = ["".join(rnd.choices(alphabet, k=rnd.randint(0, 4))) for _ in range(3)]
        if any(safe_cell(v) != v for v in row):
            assert risky(orjson.dumps(row).decode()), row


def csv_bytes(rows) -> bytes:
    buf = io.StringIO(newline="")
    # \r\n and every field quoted, as the export writes
    csv.writer(buf, quoting=csv.QUOTE_ALL).writerows(rows)
    return buf.getvalue().encode()


# Any text a stored row can hold: orjson refuses lone surrogates, nothing else.
CELLS = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(
    rows=st.lists(st.lists(CELLS, min_size=1, max_size=4), max_size=6),
    safe=st.booleans(),
)
def test_stored_rows_become_the_csv_the_csv_module_writes(rows, safe):
    """The fast way (csvrows.from_json_lines, bytes operations on the rows' JSON
    texts) writes exactly what csv.writer writes from the values: quotes, backslashes,
    control characters, formula-leading cells and all."""
    block = b"\r\n".join(orjson.dumps(r)[1:-1] for r in rows)  # as Reader.block reads
    want = [safe_row(r) if safe else r for r in rows]
    got = csvrows.from_json_lines(block, safe)
    assert got == csv_bytes(want) == csvrows.from_values(want)
    assert list(csv.reader(io.StringIO(got.decode(), newline=""))) == want


def download(client, tid) -> bytes:
    response = client.get(f"/tasks/{tid}/download")
    assert response.status_code == 200
    data = response.get_data()
    response.close()
    return data


def test_exports_escape_formulas_unless_raw(client, start_worker, tmp_path):
    start_worker()
    header = ["id", "=cmd", "value"]
    rows = [[str(i), "x", cell] for i, (cell, _) in enumerate(CASES, 1)]
    source = tmp_path / "formulas.csv"
    source.write_bytes(csv_bytes([header, *rows]))
    tid = upload(client, source).get_json()["id"]
    assert wait_status(client, tid, "COMPLETED")["rows_imported"] == len(CASES)

    safe = client.post("/exports", json={"task_id": tid}).get_json()
    raw = client.post("/exports", json={"task_id": tid, "raw": True}).get_json()
    assert safe["options"]["raw"] is False and raw["options"]["raw"] is True
    for export in (safe, raw):
        wait_status(client, export["id"], "COMPLETED")

    expected = [["id", "'=cmd", "value"]]
    expected += [[str(i), "x", escaped] for i, (_, escaped) in enumerate(CASES, 1)]
    assert download(client, safe["id"]) == csv_bytes(expected)
    assert download(client, raw["id"]) == source.read_bytes()  # byte for byte


@pytest.mark.parametrize("value", ["maybe", 2, [True]])
def test_raw_must_be_a_boolean(client, value):
    response = client.post("/exports", json={"raw": value})
    assert response.status_code == 400
    assert "raw" in response.get_json()["error"]["message"]
