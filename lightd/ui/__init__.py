"""The web console's static files (index.html, ES modules, CSS), shipped as package data.

Served as they are by :mod:`lightd.api.routes.ui`; there is no build step. Nothing in
this package runs on the server: it must stay plain files that talk to lightd only
through the public REST API and WebSockets, with no request to any other host.
"""
