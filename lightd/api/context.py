"""Access to the :class:`~lightd.services.Services` the app was built over, from handlers.

Only a lookup; it must not create anything.
"""

from __future__ import annotations

from quart import current_app

from lightd.services import Services

EXTENSION_KEY = "lightd"


def get_services() -> Services:
    services = current_app.extensions[EXTENSION_KEY]
    assert isinstance(services, Services)
    return services
