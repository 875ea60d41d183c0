"""Backups and restores of volumes: archive (local or S3) and restic adapters.

``records`` keeps what ran as observed state (``<data_dir>/state/backups``), ``walk``
streams a volume as tar through :mod:`lightd.fs`, ``local``, ``s3`` and ``restic`` store
that stream, ``restore`` stages and swaps it back through the hardened extractor,
``retention`` and ``schedule`` are pure rules, ``service`` runs the work off the event loop
and ``scheduler`` runs the backups container documents ask for. This package must not
serve HTTP (the blueprint is ``lightd.api.routes.backups``) nor edit desired documents.
"""

from lightd.backups.service import BackupService

__all__ = ["BackupService"]
