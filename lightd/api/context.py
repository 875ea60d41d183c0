"""Access to the running :class:`~lightd.daemon.Daemon` from request handlers.

Only a lookup; it must not create anything.
"""

from __future__ import annotations

from quart import current_app

from lightd.daemon import Daemon

EXTENSION_KEY = "lightd"


def get_daemon() -> Daemon:
    daemon = current_app.extensions[EXTENSION_KEY]
    assert isinstance(daemon, Daemon)
    return daemon
