"""Each private-API hook refuses to start when its library changes under it."""

import importlib
import importlib.util

import pytest
from gunicorn import util
from gunicorn.workers import base
from kombu.transport import filesystem
from werkzeug.wrappers import Request

from app.core import guards
from tests.helpers import ROOT

GUARDS = [
    (guards.werkzeug_form_parsing, Request, "_get_file_stream", "werkzeug"),
    (guards.werkzeug_form_parsing, Request, "_load_form_data", "werkzeug"),
    (guards.kombu_filesystem_put, filesystem.Channel, "_put", "kombu"),
    (guards.gunicorn_write_error, util, "write_error", "gunicorn"),
]


def load_gunicorn_conf():
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


@pytest.mark.parametrize("guard, owner, name, dist", GUARDS)
def test_the_pinned_libraries_pass(guard, owner, name, dist):
    guard()


@pytest.mark.parametrize("guard, owner, name, dist", GUARDS)
def test_a_hook_gone_upstream_fails_loudly(monkeypatch, guard, owner, name, dist):
    monkeypatch.delattr(owner, name)
    with pytest.raises(RuntimeError, match=f"has no .*{name} any more"):
        guard()


@pytest.mark.parametrize("guard, owner, name, dist", GUARDS)
def test_a_hook_with_other_parameters_fails_loudly(monkeypatch, guard, owner, name, dist):
    def renamed(self, *args, extra=None, **kwargs):
        raise AssertionError("never called")

    monkeypatch.setattr(owner, name, renamed)
    with pytest.raises(RuntimeError, match=f"changed .*{name}"):
        guard()


@pytest.mark.parametrize("guard, owner, name, dist", GUARDS)
def test_a_library_outside_the_range_fails_loudly(monkeypatch, guard, owner, name, dist):
    real = guards.version
    monkeypatch.setattr(guards, "version", lambda d: "99.0" if d == dist else real(d))
    with pytest.raises(RuntimeError, match=f"written for {dist} .* found 99.0"):
        guard()


def test_gunicorn_no_longer_calling_write_error_fails_loudly(monkeypatch):
    def handle_error(self, req, client, addr, exc):
        return None  # a gunicorn that writes its error pages some other way

    monkeypatch.setattr(base.Worker, "handle_error", handle_error)
    with pytest.raises(RuntimeError, match="no longer calls util.write_error"):
        guards.gunicorn_write_error()


def test_each_hook_is_checked_where_it_is_installed(monkeypatch, tmp_path):
    """Start-up itself fails: the app factory, gunicorn's config, the broker module."""
    from app import create_app

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", "")
    monkeypatch.setenv("REDIS_URL", "")
    with monkeypatch.context() as m:
        m.delattr(Request, "_get_file_stream")
        with pytest.raises(RuntimeError, match="uploads.UploadRequest"):
            create_app()
    with monkeypatch.context() as m:
        m.delattr(util, "write_error")
        with pytest.raises(RuntimeError, match="gunicorn.conf.json_error"):
            load_gunicorn_conf()
    import app.core.broker as broker

    with monkeypatch.context() as m:
        m.delattr(filesystem.Channel, "_put")
        with pytest.raises(RuntimeError, match="broker.Channel._put"):
            importlib.reload(broker)
    importlib.reload(broker)  # as it was
