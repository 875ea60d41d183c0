"""Builds the Quart application over the daemon's :class:`~lightd.services.Services`.

Wires the JSON provider, the guard, the error table, OpenAPI generation and the
blueprints. It must not hold state of its own.
"""

from __future__ import annotations

from quart import Quart, Response, request
from quart_schema import QuartSchema

from lightd import __version__
from lightd.api import sockets
from lightd.api.context import EXTENSION_KEY
from lightd.api.errors import install_error_handlers
from lightd.api.guard import install_guard
from lightd.api.jsonprovider import OrjsonProvider
from lightd.api.openapi import LightdOpenAPIProvider
from lightd.api.request import JsonApiRequest
from lightd.api.routes import (
    backups,
    containers,
    desired,
    health,
    network,
    public,
    remote,
    sftp,
    system,
    tokens,
    ui,
    volumes,
)
from lightd.services import Services


def _install_cors(app: Quart, services: Services) -> None:
    if not services.settings.server.cors_origins:
        return  # CORS is off: no hook on the hot path

    @app.after_request
    async def _cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and origin in services.settings.server.cors_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Accept"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE"
        return response


def create_app(services: Services) -> Quart:
    app = Quart("lightd")
    app.request_class = JsonApiRequest.with_upload_limit(services.settings.volumes.max_upload_bytes)
    # No HTML redirects for odd paths (double slashes, trailing slashes): a path either
    # names a route or answers a JSON 404.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.url_map.redirect_defaults = False
    app.config["MAX_CONTENT_LENGTH"] = services.settings.server.max_body_bytes
    app.config["BODY_TIMEOUT"] = 60
    app.config["RESPONSE_TIMEOUT"] = None
    app.extensions[EXTENSION_KEY] = services
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        swagger_ui_path="/docs",
        redoc_ui_path=None,
        scalar_ui_path=None,
        info={"title": "lightd", "version": __version__},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        security=[{"bearer": []}],
        openapi_provider_class=LightdOpenAPIProvider,
    )
    app.json = OrjsonProvider(app)  # after QuartSchema, which installs its own provider
    install_guard(app)
    _install_cors(app, services)
    install_error_handlers(app)
    modules = (
        public,
        health,
        tokens,
        remote,
        system,
        network,
        containers,
        desired,
        volumes,
        sockets,
        backups,
    )
    for module in modules:
        app.register_blueprint(module.blueprint)
    app.register_blueprint(ui.blueprint)  # the web console's static files
    app.register_blueprint(sftp.blueprint)
    return app
