"""Formula-safe CSV cells: what a spreadsheet opens shows text, never runs a formula.

OWASP's "CSV Injection" guidance: a cell beginning with `=`, `+`, `-`, `@`, a tab or
a carriage return may be read as a formula (`=HYPERLINK(...)`, `@SUM(...)`,
`-2+3+cmd|' /C calc'!A0`); a single quote before it makes the spreadsheet show it
as text. A cell that is a plain decimal number (`-12.5`, `+3`, `-1e5`) stays as it
is: a spreadsheet reads it as that number and nothing else, and quoting it would
turn every negative amount into text. Exports apply this unless `"raw": true`.
"""

import re

LEADING = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

# In rows stored as JSON array text, a cell that begins with a risky character is
# a quote followed by it (tab and CR appear escaped, `\t`, `\r`). The search also
# hits an escaped quote inside a string (`\"=`), which only costs a closer look;
# starting at the quote, the regex engine skips to each quote in C: about a third
# of what orjson.loads costs per row, and a fifth over a whole page at once.
_RISKY = r'"(?:[=+\-@]|\\[tr])'
_RISKY_JSON = re.compile(_RISKY)
RISKY_JSON = re.compile(_RISKY.encode())  # the same, over rows' UTF-8 bytes


def risky(json_rows: str) -> bool:
    """False only if no cell of the rows (JSON array texts) needs escaping."""
    return _RISKY_JSON.search(json_rows) is not None


def safe_cell(value: str) -> str:
    """The cell as a spreadsheet must see it: a quote before a formula-leading cell."""
    if value.startswith(LEADING) and not NUMBER.fullmatch(value):
        return "'" + value
    return value


def safe_row(values) -> list[str]:
    """Every cell of a row made formula-safe."""
    return [safe_cell(v) for v in values]
