"""The CSV import kind: an upload streamed into csv_entries from its byte offset."""

from app.kinds.imports.job import ImportJob as Job


def blueprints() -> list:
    """The import's endpoints: the upload, and the imported rows."""
    from app.kinds.imports import api, entries

    return [api.blp, entries.blp]


__all__ = ["Job", "blueprints"]
