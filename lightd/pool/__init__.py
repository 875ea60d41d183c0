"""The port pool: which host addresses and ports containers on this node may publish.

:class:`PortPool` owns ``desired/ports.json`` and serialises every change with one lock.
This package must not touch Docker or serve HTTP.
"""

from lightd.pool.service import Bindings, PoolListing, PortPool, PortView, Skipped

__all__ = ["Bindings", "PoolListing", "PortPool", "PortView", "Skipped"]
