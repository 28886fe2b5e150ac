"""Rows stored as JSON array text, written as CSV lines: every field quoted.

An export quotes every field (`csv.QUOTE_ALL`, lines ending in CRLF): RFC 4180 CSV
that every reader takes, and the form a stored row is already nearly in. orjson
writes a row as `["a","b, c"]`; when that text holds no backslash (no field has a
quote, a backslash or a control character, which JSON escapes), the fields hold
nothing CSV must escape either, and the CSV line is the text without its brackets:
`"a","b, c"`. So a whole page becomes CSV with a join in C
and no Python call per row; only a row with a backslash, or a formula-leading cell, is
parsed and written by the csv module.
"""

import csv
import io

import orjson

from app.kinds.exports.formulas import RISKY_JSON, safe_row


def from_values(rows) -> bytes:
    """Rows of values (lists of str) as CSV lines, every field quoted."""
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_ALL).writerows(rows)
    return buf.getvalue().encode()


def from_json_lines(block: bytes, safe: bool) -> bytes:
    """Rows' JSON array texts without their brackets, joined by CRLF (`block`, UTF-8,
    as export_reader.Reader.block reads them), as CSV lines; formula-leading cells
    made safe (formulas.safe_cell) when `safe`."""
    if not block:
        return b""
    if b"\\" not in block and not (safe and RISKY_JSON.search(block)):
        return block + b"\r\n"
    out = []
    for line in block.split(b"\r\n"):
        if b"\\" in line or (safe and RISKY_JSON.search(line)):
            values = orjson.loads(b"[" + line + b"]")
            out.append(from_values([safe_row(values) if safe else values]))
        else:
            out.append(line + b"\r\n")
    return b"".join(out)
