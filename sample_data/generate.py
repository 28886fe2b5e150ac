"""Generate large, deterministic, convertcsv-style CSV files for tests and benchmarks.

    python sample_data/generate.py ROWS OUT.csv [--seed N] [--no-header] [--crlf]

Columns: seq,first,last,email,age,street,city,state,zip,dollar,date,pick,sentence

- ``date`` is MM/DD/YYYY (2015-01-01 .. 2020-12-31), ``dollar`` like ``$1234.56``,
  ``pick`` one of RED/GREEN/BLUE/..., ``sentence`` always contains commas, so the
  writer quotes it.
- Constant memory and fast (about a million rows per second): rows are made and written
  in chunks of 10,000; each group of columns of a chunk is one ``random.choices`` draw
  from a small pool of fragments that ``csv.writer`` encoded once, so quoting is right
  by construction and the per-row work runs in C (``zip`` + ``str.join``).
- Deterministic: the same ROWS, seed and options give byte-identical files.

Importable: ``from sample_data.generate import write_csv``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import functools
import io
import os
import random
import sys
import time
from itertools import islice

HEADER = "seq,first,last,email,age,street,city,state,zip,dollar,date,pick,sentence".split(",")

CHUNK_ROWS = 10_000

FIRST = (
    "Adam Alice Amelia Andrew Anna Arthur Barbara Ben Bertha Bill Carl Carrie Cecilia "
    "Charles Chloe Chris Daisy Dale Dan David Della Dora Earl Ed Edith Eliza Emma Eric "
    "Ernest Ethel Eva Frank Fred Gary Gene George Gertrude Grace Harry Hattie Helen Henry "
    "Ida Isaac Jack Jane Jason Jean Jerome Jesse Joe John Josie Julia Katie Keith Lena "
    "Leo Lilly Lola Lou Lucy Luis Mabel Mae Marc Maria Mark Mary Max Minnie Nancy Nell "
    "Nora Olive Oscar Owen Pearl Pete Phoebe Ralph Ray Rhoda Rose Roy Ruby Ruth Sam Sara "
    "Sophie Stella Steve Susie Ted Tom Vera Victor Violet Walter Willie Zoe"
).split()

LAST = (
    "Adams Allen Alvarez Bailey Baker Barnes Bell Bennett Brooks Brown Bryant Butler "
    "Campbell Carter Castro Clark Cole Collins Cook Cooper Cruz Davis Diaz Edwards Evans "
    "Fisher Flores Ford Foster Garcia Gibson Gomez Gonzales Graham Gray Green Griffin "
    "Hall Harris Hayes Henderson Hill Howard Hughes Jackson James Jenkins Johnson Jones "
    "Jordan Kelly Kennedy Kim King Lee Lewis Long Lopez Marshall Martin Mason Meyer "
    "Miller Mitchell Moore Morgan Morris Murphy Myers Nelson Nguyen Owens Parker Patel "
    "Perez Perry Peters Phillips Powell Price Ramos Reed Reyes Richards Rivera Roberts "
    "Robinson Rogers Ross Russell Sanders Scott Shaw Simmons Smith Stewart Sullivan "
    "Taylor Thomas Torres Turner Walker Ward Watson White Wilson Wood Wright Young"
).split()

DOMAINS = "ab.com ce.net fi.org gu.io hu.edu ka.gov mo.com ne.net po.org ru.com".split()

STREET_NAMES = (
    "Abbey Alder Ash Aspen Bay Beech Birch Cedar Cherry Chestnut Cliff Clover Creek "
    "Cypress Dogwood Elm Fern Forest Garden Glen Grove Harbor Hazel Hickory Hill Holly "
    "Island Ivy Juniper Lake Laurel Linden Magnolia Maple Meadow Mill Oak Orchard Park "
    "Pine Poplar Ridge River Rose Sage Spring Spruce Summit Sunset Valley Walnut Willow"
).split()
STREET_KINDS = "St Ave Rd Ln Dr Ct Pl Way Blvd Trl".split()

CITIES = (
    "Abuzo Bamuwo Cezoju Dabiba Eguhuk Fijwoz Gukovo Hawase Ijuraj Jefebu Kaputo Lokuta "
    "Mafomu Nibone Oniwu Pedago Rukaho Sizoli Tanwec Umakot Vozeka Wijapa Yotebu Zibuda "
    "Acodo Birsi Cuhvo Dugsez Ekedo Fehisu"
).split()

STATES = (
    "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV "
    "NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY"
).split()

PICKS = "RED GREEN BLUE YELLOW WHITE ORANGE PURPLE BROWN BLACK".split()

WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud "
    "exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure in "
    "reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint "
    "occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim id est "
    "laborum"
).split()

DATE_FIRST = _dt.date(2015, 1, 1)
DATE_LAST = _dt.date(2020, 12, 31)


_ENC_BUF = io.StringIO()
_ENC_WRITER = csv.writer(_ENC_BUF, lineterminator="")


def _encode(fields) -> str:
    """One CSV record (no line end) exactly as ``csv.writer`` quotes it."""
    _ENC_BUF.seek(0)
    _ENC_BUF.truncate()
    _ENC_WRITER.writerow(fields)
    return _ENC_BUF.getvalue()


@functools.lru_cache(maxsize=4)
def _seeded_pools(seed: int):
    rng = random.Random(seed)
    pools = _pools(rng)
    return pools, rng.getstate()


def _pools(rng: random.Random) -> list[list[str]]:
    """Small precomputed pools of ready-encoded CSV fragments, one per column group.

    A data row is ``seq`` plus one fragment from each pool, joined by commas. Every
    fragment was encoded by ``csv.writer`` itself, so quoting is right by construction,
    and the hot loop does no per-field work in Python.
    """
    names = [_encode([first, last]) for first in FIRST for last in LAST]  # first,last
    emails = [
        _encode(
            [
                (
                    f"{rng.choice(FIRST).lower()}.{rng.choice(LAST).lower()}"
                    f"{rng.randrange(100)}@{rng.choice(DOMAINS)}"
                )
            ]
        )
        for _ in range(4096)
    ]
    age_street = [
        _encode(
            [
                str(rng.randrange(18, 91)),
                f"{rng.randrange(1, 9999)} {rng.choice(STREET_NAMES)} {rng.choice(STREET_KINDS)}",
            ]
        )
        for _ in range(8192)
    ]
    city_state_zip = [
        _encode(
            [
                rng.choice(CITIES),
                rng.choice(STATES),
                f"{rng.randrange(1000, 99999):05d}",
            ]
        )
        for _ in range(8192)
    ]
    dollars = [_encode([f"${rng.randrange(100, 1000000) / 100:.2f}"]) for _ in range(8192)]
    ndays = (DATE_LAST - DATE_FIRST).days + 1
    date_pick = [
        _encode([(DATE_FIRST + _dt.timedelta(days=d)).strftime("%m/%d/%Y"), pick])
        for d in range(ndays)
        for pick in PICKS
    ]

    def sentence() -> str:
        # 2-4 clauses joined by ", " so every sentence holds at least one comma.
        clauses = [
            " ".join(rng.choices(WORDS, k=rng.randrange(2, 7))) for _ in range(rng.randrange(2, 5))
        ]
        text = ", ".join(clauses)
        return text[0].upper() + text[1:] + "."

    sentences = [_encode([sentence()]) for _ in range(4096)]
    return [names, emails, age_street, city_state_zip, dollars, date_pick, sentences]


def iter_chunks(rows: int, seed: int = 0, chunk_rows: int = CHUNK_ROWS, *, eol: str = "\n"):
    """Yield the data rows as encoded CSV text, ``chunk_rows`` records at a time."""
    pools, state = _seeded_pools(seed)
    rng = random.Random()
    rng.setstate(state)
    choices = rng.choices
    join = ",".join
    done = 0
    while done < rows:
        n = min(chunk_rows, rows - done)
        seq = map(str, range(done + 1, done + n + 1))
        columns = [choices(pool, k=n) for pool in pools]
        yield eol.join(map(join, zip(seq, *columns, strict=True))) + eol
        done += n


def write_csv(path, rows: int, seed: int = 0, *, header: bool = True, crlf: bool = False) -> str:
    """Write ``rows`` data rows (plus the header unless ``header=False``) to ``path``.

    Returns ``path`` as a string. Memory stays constant whatever ``rows`` is.
    """
    path = os.fspath(path)
    with open(path, "w", newline="", encoding="utf-8", buffering=1 << 20) as f:
        _write(f, rows, seed, header=header, crlf=crlf)
    return path


def _write(f, rows: int, seed: int, *, header: bool, crlf: bool) -> None:
    eol = "\r\n" if crlf else "\n"
    if header:
        f.write(",".join(HEADER) + eol)
    for text in iter_chunks(rows, seed, eol=eol):
        f.write(text)


def iter_rows(rows: int, seed: int = 0):
    """The data rows ``write_csv(path, rows, seed)`` writes, parsed: lists of 13 strings."""
    for text in iter_chunks(rows, seed):
        yield from csv.reader(io.StringIO(text))


def read_rows(path, start: int = 0, stop: int | None = None, *, header: bool = True):
    """Parsed data rows [start, stop) of a CSV file, as lists of strings (for tests)."""
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.reader(f)
        if header:
            next(r, None)
        return list(islice(r, start, stop))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", type=int, help="number of data rows")
    p.add_argument("out", help="output CSV path ('-' for stdout)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-header", action="store_true", help="omit the header line")
    p.add_argument("--crlf", action="store_true", help="end lines with CRLF instead of LF")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on stderr")
    a = p.parse_args(argv)
    if a.rows < 0:
        p.error("ROWS must be >= 0")
    t0 = time.perf_counter()
    if a.out == "-":
        _write(sys.stdout, a.rows, a.seed, header=not a.no_header, crlf=a.crlf)
        sys.stdout.flush()
    else:
        out_dir = os.path.dirname(os.path.abspath(a.out))
        os.makedirs(out_dir, exist_ok=True)
        write_csv(a.out, a.rows, a.seed, header=not a.no_header, crlf=a.crlf)
    dt = time.perf_counter() - t0
    if not a.quiet and a.out != "-":
        size = os.path.getsize(a.out)
        print(
            f"wrote {a.rows:,} rows, {size / 1e6:.1f} MB to {a.out} in {dt:.2f} s "
            f"({a.rows / dt if dt else 0:,.0f} rows/s)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
