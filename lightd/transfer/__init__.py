"""Moving data onto this node: pulls from URLs and node-to-node transfers.

``guard`` decides which URLs and addresses a pull may reach (pure); ``pull`` runs the
pulls. ``tokens`` mints transfer tokens, ``stream`` is the wire format and the volume
tar, ``pipe`` moves its bytes between worker threads and the event loop, ``records``
keeps transfer records across restarts, ``backups`` decides which backups travel,
``commit`` is the commit step that leaves exactly one node owning the server, ``hooks``
holds test-only pause points, and ``service`` runs both sides. This package must not
serve HTTP: the API calls it through ``Services``.
"""
