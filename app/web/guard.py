"""Refuse requests for a Host we do not serve, and state changes from another origin.

Runs before anything else (the token, the rate limit, the database):

- `Host` must name one of ALLOWED_HOSTS (the port is ignored): a foreign name is a
  400, so a DNS-rebinding page that reaches us under its own name reads nothing.
- An unsafe method (POST, PUT, PATCH, DELETE) on any path is a 403 when the browser
  says it comes from elsewhere: `Sec-Fetch-Site: cross-site`, or an `Origin` that is
  not this service's own scheme://host:port. Clients that send neither header (curl,
  Postman, scripts) and our own page (same origin) go through, token or not.

Hand-written, on purpose: werkzeug's TRUSTED_HOSTS cannot match an IPv6 literal
(it cuts the allowed name at its first colon, so `[::1]` never matches), and the
Flask CSRF libraries want a token in every form, which would break curl clients.
The origin rule is the one of Go's net/http CrossOriginProtection.
"""

from urllib.parse import urlsplit

from flask import Flask, current_app, request

from app.web.errors import error_response

SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE"}
DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(value: str) -> tuple[str, int | None] | None:
    """(lower-case name, port or None) of a Host header value; None if malformed."""
    try:
        parts = urlsplit(f"//{value}")
        name, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, an unbalanced bracket
        return None
    if not name or parts.username is not None or parts.path or parts.query:
        return None
    return (f"[{name}]" if ":" in name else name), port


def allowed_host(value: str | None, allowed: list[str]) -> bool:
    """Whether a Host header names one of `allowed` (names, compared without port)."""
    split = split_host(value or "")
    return split is not None and split[0] in allowed


def _origin_key(scheme: str, host: str) -> tuple[str, str, int] | None:
    split = split_host(host)
    if split is None or scheme not in DEFAULT_PORTS:
        return None
    name, port = split
    return scheme, name, port or DEFAULT_PORTS[scheme]


def same_origin(origin: str) -> bool:
    """Whether a browser's `Origin` is this service's scheme://host[:port]."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.path or parts.query or parts.fragment or not parts.netloc:
        return False  # "null", or not an origin at all
    theirs = _origin_key(parts.scheme.lower(), parts.netloc)
    return theirs is not None and theirs == _origin_key(request.scheme, request.host)


def check_request():
    """Before every request: a 400 for a foreign Host, a 403 for a cross-origin change."""
    if not allowed_host(request.headers.get("Host"), current_app.config["ALLOWED_HOSTS"]):
        return error_response(400, "this server does not serve that Host name")
    if request.method in SAFE_METHODS:
        return None
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return error_response(403, "cross-site request refused")
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(origin):
        return error_response(403, "request from another origin refused")
    return None


def relative_redirect(response):
    """A redirect's Location as a path: never a host taken from the request.

    werkzeug's own redirects (`/tasks//1` to `/tasks/1`) build an absolute URL
    from the Host header; the browser resolves a path against where it is.
    """
    location = response.headers.get("Location")
    if location and 300 <= response.status_code < 400:
        parts = urlsplit(location)
        if parts.scheme or parts.netloc:
            path = "/" + parts.path.lstrip("/")  # never "//host": that is a host again
            response.headers["Location"] = path + (f"?{parts.query}" if parts.query else "")
    return response


def init_app(app: Flask) -> None:
    """Install the check ahead of every other before-request function."""
    app.before_request_funcs.setdefault(None, []).insert(0, check_request)
    app.after_request(relative_redirect)
