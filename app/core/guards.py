"""Fences around the private library APIs this service overrides.

Each override is checked where it is installed, at start-up: the library's version is
in the range the override was written for, and the private attribute is still there
with the parameters the override expects. An upgrade that changes either stops the
process with a RuntimeError naming the hook, instead of the override silently never
being called (the way maintenance_tasks refuses to load when an overridden upstream
method disappears). Widen a range only after reading the new upstream code.
"""

import inspect
import re
from importlib.metadata import version


def _release(text: str) -> tuple[int, ...]:
    """The numeric release of a version string: "5.7.0rc1" -> (5, 7, 0)."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def check(hook: str, dist: str, supported: tuple[str, str], owner, name: str, params) -> None:
    """Refuse to start unless `dist` is in [low, high) and `owner.name` takes `params`."""
    low, high = supported
    found = version(dist)
    if not _release(low) <= _release(found) < _release(high):
        raise RuntimeError(
            f"{hook}: written for {dist} >={low},<{high}, found {found}; "
            f"read the new {dist} before widening the range in app/core/guards.py"
        )
    # Defined by `owner` itself: one inherited from a base class is not what was overridden.
    target = vars(owner).get(name)
    where = f"{getattr(owner, '__name__', owner)}.{name}"
    if not callable(target):
        raise RuntimeError(f"{hook}: {dist} {found} has no {where} any more")
    got = tuple(inspect.signature(target).parameters)
    if got != tuple(params):
        raise RuntimeError(f"{hook}: {dist} {found} changed {where}{got}, expected {tuple(params)}")


def werkzeug_form_parsing() -> None:
    """app/core/uploads.py: where multipart file parts are written, and form errors."""
    from werkzeug.wrappers import Request

    hook = "uploads.UploadRequest"
    check(
        hook,
        "werkzeug",
        ("3.1", "3.2"),
        Request,
        "_get_file_stream",
        ("self", "total_content_length", "content_type", "filename", "content_length"),
    )
    check(hook, "werkzeug", ("3.1", "3.2"), Request, "_load_form_data", ("self",))


def kombu_filesystem_put() -> None:
    """app/core/broker.py: the embedded broker writes each message atomically."""
    from kombu.transport import filesystem

    params = ("self", "queue", "payload", "kwargs")
    check("broker.Channel._put", "kombu", ("5.7", "5.8"), filesystem.Channel, "_put", params)


def gunicorn_write_error() -> None:
    """gunicorn.conf.py: gunicorn's own error pages in the API's JSON error shape.

    The replacement works only while workers look `util.write_error` up at each call.
    """
    from gunicorn import util
    from gunicorn.workers import base

    hook = "gunicorn.conf.json_error"
    params = ("sock", "status_int", "reason", "mesg")
    check(hook, "gunicorn", ("27.0", "28.0"), util, "write_error", params)
    check(hook, "gunicorn", ("27.0", "28.0"), util, "write_nonblock", ("sock", "data", "chunked"))
    names = base.Worker.handle_error.__code__.co_names
    if not {"util", "write_error"} <= set(names):
        raise RuntimeError(
            f"{hook}: gunicorn's Worker.handle_error no longer calls util.write_error"
        )
