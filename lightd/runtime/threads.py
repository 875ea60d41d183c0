"""Starting reader threads without making the event loop wait for them.

``Thread.start()`` returns only once the new thread has run (it waits for it to say
so); on a loaded machine that is one or two scheduler wake-ups, tens of milliseconds
during which the loop answers nothing. :func:`start_soon` hands the start to one
long-lived starter thread instead (threads start in the order asked). It must not run
the threads' work itself, nor join them.
"""

from __future__ import annotations

import logging
import queue
import threading

log = logging.getLogger("lightd.threads")

_pending: queue.SimpleQueue[threading.Thread] = queue.SimpleQueue()
_starter: threading.Thread | None = None
_lock = threading.Lock()


def _start_each() -> None:
    while True:
        thread = _pending.get()
        try:
            thread.start()
        except Exception:  # out of threads: the reader is missing, the daemon goes on
            log.exception("could not start thread %s", thread.name)


def start_soon(thread: threading.Thread) -> None:
    """Start ``thread`` from the starter thread; returns at once."""
    global _starter
    with _lock:
        if _starter is None or not _starter.is_alive():
            _starter = threading.Thread(target=_start_each, name="thread-starter", daemon=True)
            _starter.start()
    _pending.put(thread)
