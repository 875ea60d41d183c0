"""systemd's notify protocol (``Type=notify``): tell the service manager we are ready.

A datagram to ``$NOTIFY_SOCKET`` when it is set; nothing otherwise. No dependency, no
state; it must never raise into the caller.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("lightd.sdnotify")


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``READY=1``); False when not under systemd or on failure."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        log.warning("could not notify systemd: %s", exc)
        return False
    return True
