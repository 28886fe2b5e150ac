"""The export kind: the rows an export matches, streamed into a CSV file."""

from app.kinds.exports.job import ExportJob as Job


def blueprints() -> list:
    """The export's endpoints: start one, and download its file."""
    from app.kinds.exports import api

    return [api.blp]


__all__ = ["Job", "blueprints"]
