"""The built-in SFTP server: asyncssh on top of lightd's escape-proof file layer.

``server`` holds :class:`SftpService` (the one entry point the daemon wires: start,
stop, credentials, session closing, ``GET /system``'s block), ``handler`` serves every
SFTP request through :mod:`lightd.fs`, ``credentials`` keeps usernames, scrypt hashes
and public keys, ``rules`` (pure) decides lockouts, permissions and session caps, and
``activity`` (pure) batches logins, uploads, deletions and renames. This package must
not import the web framework or the Docker engine, and never uses asyncssh's own file
methods or ``chroot``.
"""

from lightd.sftp.server import ContainerAccess, SftpService

__all__ = ["ContainerAccess", "SftpService"]
