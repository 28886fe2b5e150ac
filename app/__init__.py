"""Application factory: the Flask app and the Celery app meet here."""

from pathlib import Path

from celery import Celery, Task
from flask import Flask
from flask_migrate import Migrate
from werkzeug.middleware.proxy_fix import ProxyFix

from app import config
from app.core.database import configure_engine
from app.core.models import db
from app.core.store import Store

RUNS_QUEUE = "runs"


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: settings, database, API, page and Celery."""
    app = Flask(__name__, template_folder="web/templates", static_folder="web/static")
    app.json.sort_keys = False  # entries' data keeps the CSV's column order
    app.config.from_mapping(config.from_environment())
    app.config.update(
        API_TITLE="Task control service",
        API_VERSION="1.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
    )
    if test_config:
        app.config.update(test_config)
    data_dir = Path(app.config["DATA_DIR"])
    for sub in ("uploads", "exports", "broker/queue", "broker/control", "broker/processed"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    app.config.setdefault("CELERY", celery_settings(app.config))

    db.init_app(app)
    with app.app_context():
        configure_engine(db.engine)
        app.extensions["store"] = Store(db.engine)
    Migrate(app, db, directory=str(Path(__file__).parent.parent / "migrations"))

    from app.core import uploads
    from app.web import api, auth, errors, guard, limits, metrics, page

    if hops := app.config["PROXY_HOPS"]:
        # Only the trusted front proxy's X-Forwarded-For/-Proto: the client address
        # the limits key on, and the scheme the origin check compares.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    uploads.init_app(app)
    if app.config.get("STORAGE_URL"):
        from app.core import storage

        storage.for_config(app.config)  # a bad STORAGE_URL fails here, at start-up
    errors.init_app(app)
    auth.init_app(app)
    guard.init_app(app)  # first of the before-request functions
    limits.init_app(app)
    api.init_app(app)
    app.register_blueprint(page.bp)
    app.register_blueprint(metrics.bp)
    celery_init_app(app)
    from app import cli

    cli.init_app(app)
    return app


def celery_settings(cfg: dict) -> dict:
    """The CELERY mapping: Redis when REDIS_URL is set, else the embedded broker."""
    settings = {
        "task_ignore_result": True,
        "result_backend": None,
        "task_default_queue": RUNS_QUEUE,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }
    if cfg.get("REDIS_URL"):
        settings["broker_url"] = cfg["REDIS_URL"]
        # A run acks its message as it starts, which frees the prefetch slot: a busy
        # worker would take the next message and sit on it for the whole import
        # while another worker idles. Redis only (Celery ignores it elsewhere, with
        # a warning; the embedded broker has one worker anyway).
        settings["worker_disable_prefetch"] = True
        return settings
    from app.core.broker import SCHEME as broker_scheme

    broker = Path(cfg["DATA_DIR"]) / "broker"
    settings["broker_url"] = f"{broker_scheme}://localhost/"
    settings["broker_transport_options"] = {
        # Senders write and workers read the same absolute folder.
        "data_folder_in": str(broker / "queue"),
        "data_folder_out": str(broker / "queue"),
        "control_folder": str(broker / "control"),
        "processed_folder": str(broker / "processed"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
    return settings


def celery_init_app(app: Flask) -> Celery:
    """Flask's documented pattern: tasks run inside the app context."""

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    from app.core import dispatch  # noqa: F401  (registers the Celery task)

    return celery_app
