"""Volumes on disk and file operations that cannot escape them.

``paths`` parses what callers type, ``beneath`` walks below a volume root by descriptors
without following symlinks, ``ops`` and ``archive`` build every file operation on that
walk, ``codec`` runs compression in a second thread, ``volumes`` manages the folders.
This package must not import the web framework or the Docker engine.
"""

from lightd.fs.archive import ArchiveLimits
from lightd.fs.volumes import Volume, VolumeInfo, VolumeManager

__all__ = ["ArchiveLimits", "Volume", "VolumeInfo", "VolumeManager"]
