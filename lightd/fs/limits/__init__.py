"""Per-volume disk limits: backends behind one small protocol, decisions kept pure.

``decide`` holds every choice that can be pure (which backend, how much room a write
has, whether a limit change is a grow, a refusal or a no-op, whether a volume is over);
``base`` is the :class:`~lightd.fs.limits.base.DiskBackend` protocol; ``btrfs``,
``image``, ``project`` and ``soft`` are its backends (the kernel and CLI calls live in
them and nowhere else); ``manager`` keeps each volume's limit and usage cache and is what
the rest of lightd talks to. Nothing here serves HTTP or touches the engine.
"""

from lightd.fs.limits.decide import BACKEND_NAMES, Choice, Probe, choose
from lightd.fs.limits.manager import DiskLimits, VolumeDisk

__all__ = ["BACKEND_NAMES", "Choice", "DiskLimits", "Probe", "VolumeDisk", "choose"]
