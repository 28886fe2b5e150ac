"""The API token, signed download links and the security headers of every response.

When API_TOKEN is set, every view needs `Authorization: Bearer <token>` unless it
is marked `public` (the page, its assets, /healthz, /openapi.json). A view marked
`signed` (the download) also accepts a short-lived link from `download_link`, so
the page can hand a download to the browser without putting the token in a URL.
"""

import hmac

from flask import Flask, current_app, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from app.web.errors import error_response

LINK_SECONDS = 60
LINK_SALT = "download-link"

# Static files and the description of the API are not views of ours: named here.
PUBLIC_ENDPOINTS = {"static", "api-docs.openapi_json"}

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CSP,
    "Cross-Origin-Opener-Policy": "same-origin",
}


def public(view):
    """Mark a view as open without the API token."""
    view.public = True
    return view


def public_if(setting: str):
    """Mark a view as open without the token when the app's `setting` is true."""

    def mark(view):
        view.public_if = setting
        return view

    return mark


def signed(view):
    """Mark a view (taking `task_id`) as also open with a valid signed link."""
    view.signed = True
    return view


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=LINK_SALT)


def download_link(task_id: int) -> str:
    """A relative URL that downloads `task_id` without the token for LINK_SECONDS."""
    sig = _serializer().dumps(task_id)
    return url_for("exports.download", task_id=task_id, sig=sig)


def valid_signature(task_id, sig: str | None) -> bool:
    """Whether `sig` was made by download_link for this task less than LINK_SECONDS ago."""
    if not sig:
        return False
    try:
        return _serializer().loads(sig, max_age=LINK_SECONDS) == task_id
    except BadSignature:  # also SignatureExpired
        return False


def bearer_ok(token: str) -> bool:
    """Whether the request carries the token (compared in constant time)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _unauthorized():
    response, code = error_response(
        401, "missing or wrong API token: send Authorization: Bearer <token>"
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
    return response, code


def check_request():
    """Before every request: refuse it with a 401 unless it may go through."""
    token = current_app.config.get("API_TOKEN")
    if not token or request.routing_exception is not None or request.method == "OPTIONS":
        return None  # no token set; or a 404/405 that reveals only what /openapi.json says
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    view = current_app.view_functions.get(request.endpoint)
    if getattr(view, "public", False) or bearer_ok(token):
        return None
    if current_app.config.get(getattr(view, "public_if", None) or "", False):
        return None
    task_id = (request.view_args or {}).get("task_id")
    if getattr(view, "signed", False) and valid_signature(task_id, request.args.get("sig")):
        return None
    return _unauthorized()


def add_security_headers(response):
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    app.before_request(check_request)
    app.after_request(add_security_headers)
