"""Uploads stream straight to DATA_DIR/uploads under a name the server makes."""

import os
import uuid

from flask import Request, current_app

UPLOADS = "uploads"


class UploadRequest(Request):
    """Writes each uploaded file part to its own file in DATA_DIR while it streams.

    The multipart parser copies the body in small chunks, so memory stays flat
    whatever the size; files nobody adopts are removed when the request ends.
    """

    def _get_file_stream(
        self, total_content_length, content_type, filename=None, content_length=None
    ):
        folder = os.path.join(current_app.config["DATA_DIR"], UPLOADS)
        path = os.path.join(folder, f"{uuid.uuid4().hex}.part")
        part = open(path, "w+b")  # noqa: SIM115  (closed by adopt or discard_parts)
        self.__dict__.setdefault("upload_parts", []).append(part)
        return part


def adopt(file_storage) -> tuple[str, int]:
    """Close an uploaded part, give it its final name; return (path, size)."""
    stream = file_storage.stream
    stream.flush()
    size = os.fstat(stream.fileno()).st_size
    part = stream.name
    stream.close()
    final = part[: -len(".part")] + ".csv"
    os.replace(part, final)
    return final, size


def discard_parts(request) -> None:
    """Remove the request's upload parts that were not adopted (errors, aborts)."""
    for part in request.__dict__.get("upload_parts", ()):
        part.close()
        try:
            os.unlink(part.name)
        except FileNotFoundError:
            pass


def init_app(app) -> None:
    app.request_class = UploadRequest

    @app.teardown_request
    def _discard(_exc):
        from flask import request

        discard_parts(request)
