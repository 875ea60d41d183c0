"""Panel notifications: every state change of a container, delivered to ``remote.url``.

See :mod:`lightd.remote.notifier` for the moving parts.
"""

from lightd.remote.notifier import Notifier, RemoteStatus

__all__ = ["Notifier", "RemoteStatus"]
