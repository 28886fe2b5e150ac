"""How an export reads csv_entries: pages by key, and each source's column order.

No Flask here. Pages go through the DBAPI cursor (no Row objects on the hot path).
"""

from operator import itemgetter

from . import states as S
from .store import Store

CHUNK = 500  # source ids per IN (...) list


class Source:
    """One import an export reads: its bound, its date column and its column order."""

    def __init__(self, spec: dict, names: list[str], header: list[str]):
        self.id, self.bound, self.date = spec["id"], spec["bound"], spec["date"]
        missing = len(names)  # index of the "" appended for the columns it lacks
        where = [names.index(c) if c in names else missing for c in header]
        if names == header:
            self.arrange = None  # already in the file's order
        elif len(where) == 1:
            self.arrange = lambda vals, i=where[0]: ((vals + [""])[i],)
        else:
            pick = itemgetter(*where)
            self.arrange = lambda vals: pick(vals + [""])


class Reader:
    """Pages of csv_entries in key order (keyset, never OFFSET), through the DBAPI.

    A page is a window of keys (after, after + n]: its cost is bounded whatever
    plan the database picks (PostgreSQL, with stale statistics right after a big
    import, would sort a whole key range for a LIMIT). A row is (id, task_id,
    row_number, data, date). When every source keeps its date in the same column
    the database extracts it (`date`): a count reads no `data`, and a filtered
    write parses only the rows it keeps.
    """

    def __init__(self, store: Store, hi: int, sources: dict, filtered: bool):
        self.engine, self.hi = store.reader, hi
        sqlite = store.dialect == "sqlite"
        mark = self.mark = "?" if sqlite else "%s"
        dates = {s.date for s in sources.values()}
        self.sql_date = filtered and len(dates) == 1
        k = dates.pop() if self.sql_date else None
        date = "NULL"
        if self.sql_date:
            date = f"json_extract(data, '$[{int(k)}]')" if sqlite else f"(data::json ->> {int(k)})"
        # One source: "+task_id" keeps SQLite off the (task_id, row_number) index.
        self.only = next(iter(sources)) if len(sources) == 1 else None
        where = f"id > {mark} AND id <= {mark}"
        if self.only is not None:
            where += f" AND +task_id = {mark}"
        tail = f" FROM csv_entries WHERE {where} ORDER BY id"
        self.rows_sql = f"SELECT id, task_id, row_number, data, {date}{tail}"
        counted = "NULL" if self.sql_date else "data"
        self.count_sql = f"SELECT id, task_id, row_number, {counted}, {date}{tail}"
        self.next_sql = f"SELECT min(id) FROM csv_entries WHERE id > {mark}"

    def page(self, after: int, n: int, count_only: bool = False) -> tuple[list[tuple], int]:
        """The entries with keys in (after, after + n], at most hi; and the key read up to."""
        upto = min(after + n, self.hi)
        params = [after, upto] + ([self.only] if self.only is not None else [])
        rows = self._query(self.count_sql if count_only else self.rows_sql, params)
        if not rows and upto < self.hi:  # a gap (rows rolled back): jump over it
            following = self._query(self.next_sql, [upto])[0][0]
            upto = self.hi if following is None else min(following - 1, self.hi)
        return rows, upto

    def gone(self, ids: list[int]) -> tuple | None:
        """(id, status) of a source that is terminated or being terminated, if any."""
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            marks = ", ".join([self.mark] * len(chunk))
            sql = (
                f"SELECT id, status FROM tasks WHERE id IN ({marks}) "
                f"AND status IN ('{S.TERMINATING}', '{S.REVOKED}') LIMIT 1"
            )
            found = self._query(sql, chunk)
            if found:
                return found[0]
        return None

    def _query(self, sql: str, params: list) -> list[tuple]:
        with self.engine.connect() as conn:
            cur = conn.connection.driver_connection.cursor()
            try:
                cur.execute(sql, params)
                return cur.fetchall()
            finally:
                cur.close()
