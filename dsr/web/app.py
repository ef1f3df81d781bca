"""The app factory: the one place where web, queue and database are wired together."""

from __future__ import annotations

import atexit
import logging

from flask import Flask, jsonify
from flask_smorest import Api
from sqlalchemy import text
from werkzeug.exceptions import MethodNotAllowed

from dsr import runtime as runtimes
from dsr.config import Settings, project_folder
from dsr.queue import EmbeddedWorker, RqDispatcher, Sweeper, connect, make_queue
from dsr.web import api, callbacks, home, json_body, unavailable
from dsr.web.context import WebContext, web_context

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, start_worker: bool | None = None) -> Flask:
    settings = (settings or Settings.from_env()).checked()
    app = Flask(__name__, instance_path=str(settings.instance_dir), template_folder=str(project_folder("templates")))
    json_body.install(app)
    app.config.update(
        SECRET_KEY=settings.resolved_secret_key(),
        API_TITLE="dsr: data-subject requests",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        JSON_SORT_KEYS=False,
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    connection = connect(settings)
    queue = make_queue(settings, connection)
    dispatcher = RqDispatcher(queue, settings.retry_intervals)
    runtime = runtimes.build(settings, dispatcher)
    context = WebContext(runtime, queue)
    app.extensions["dsr"] = context

    rest = Api(app, spec_kwargs={"extra_plugins": [unavailable.Documented()]})
    rest.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    for blueprint in (api.blp, callbacks.blp):
        rest.register_blueprint(blueprint)
    app.register_blueprint(home.bp)
    unavailable.install(app)
    _method_not_allowed(app)
    _health(app)

    embedded = settings.redis_url is None
    if start_worker if start_worker is not None else (embedded and settings.embedded_worker):
        context.worker = EmbeddedWorker(runtime, queue)
        context.worker.start()
        context.sweeper = Sweeper(runtime, interval=settings.sweep_seconds)
        context.sweeper.start()
        atexit.register(context.sweeper.stop)
    return app


def _method_not_allowed(app: Flask) -> None:
    """405 in the API's error shape, keeping the Allow header HTTP requires (RFC 9110 15.5.6), which the
    generic JSON error handler drops."""

    @app.errorhandler(MethodNotAllowed)
    def method_not_allowed(error: MethodNotAllowed):  # type: ignore[no-untyped-def]
        allowed = sorted(error.valid_methods or ())
        response = jsonify(code=405, status="Method Not Allowed",
                           message=f"this address answers {', '.join(allowed)}" if allowed else "not allowed here")
        response.status_code = 405
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response


def _health(app: Flask) -> None:
    @app.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz():  # type: ignore[no-untyped-def]
        context = web_context()
        problems = {}
        try:
            with context.runtime.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            problems["database"] = exc.__class__.__name__
        try:
            context.queue.connection.ping()
        except Exception as exc:
            problems["queue"] = exc.__class__.__name__
        return jsonify(status="ok" if not problems else "unavailable", problems=problems), 200 if not problems else 503
