"""SFTP credentials of the node: one per container, persisted in ``<data_dir>/sftp/``.

A credential holds a unique username, the container it opens, an scrypt hash of its
password (never the password), OpenSSH public keys and permissions. The store is one
document (``sftp/credentials.json``, mode 0600 through the data DocumentStore) read at
start and rewritten atomically on every change, so credentials survive restarts.

Password hashing is deliberately slow (scrypt, ~16 MiB, tens of milliseconds): callers
run :func:`verify_password` in a thread. This module must not log a password, a hash or
a key, and must not know about SSH connections.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
import time
from dataclasses import dataclass, field

import asyncssh

from lightd.errors import Conflict, InvalidField, NotFound
from lightd.sftp.rules import (
    Permission,
    normalized_permissions,
    permissions_problem,
    username_problem,
)
from lightd.store import DocumentStore

DOCUMENT = "sftp/credentials.json"
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_LEN = 32
GENERATED_PASSWORD_LENGTH = 24
MAX_PUBLIC_KEYS = 32
MAX_PASSWORD_BYTES = 1024
_ALPHABET = string.ascii_letters + string.digits


class UsernameTaken(Conflict):
    message = "Username already in use"


class CredentialNotFound(NotFound):
    message = "No SFTP credentials for this container"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=64 * 1024 * 1024,
        dklen=SCRYPT_LEN,
    )
    encoded = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encoded[0]}${encoded[1]}"


# Verifying against this when the user is unknown keeps both answers equally slow.
_DUMMY_HASH = hash_password(secrets.token_hex(16))


def verify_password(password: str, stored: str | None) -> bool:
    """True when ``password`` matches ``stored``; constant work whatever ``stored`` is."""
    target = stored or _DUMMY_HASH
    try:
        scheme, n, r, p, salt, digest = target.split("$")
        if scheme != "scrypt":
            raise ValueError(scheme)
        computed = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 1024 * 1024,
            dklen=len(base64.b64decode(digest)),
        )
    except (ValueError, TypeError):
        return False
    return stored is not None and hmac.compare_digest(computed, base64.b64decode(digest))


class RecentLogins:
    """Passwords verified recently, so a client opening many sessions pays scrypt once.

    Holds only an HMAC (with a key made at start and never stored) of the username, the
    password and the stored hash: a changed password or a replaced credential never
    matches, and nothing here can be turned back into a password. Entries expire after
    ``ttl`` seconds; at most ``size`` are kept. Callers still check the lockout first.
    """

    def __init__(self, *, ttl: float = 600.0, size: int = 4096) -> None:
        self.ttl = ttl
        self.size = size
        self._key = secrets.token_bytes(32)
        self._seen: dict[bytes, float] = {}

    def _digest(self, username: str, password: str, stored: str) -> bytes:
        message = b"\0".join((username.encode(), password.encode(), stored.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def known(self, username: str, password: str, stored: str, now: float) -> bool:
        digest = self._digest(username, password, stored)
        until = self._seen.get(digest)
        if until is None:
            return False
        if now >= until:
            del self._seen[digest]
            return False
        return True

    def remember(self, username: str, password: str, stored: str, now: float) -> None:
        if len(self._seen) >= self.size:
            for digest in [d for d, until in self._seen.items() if until <= now]:
                del self._seen[digest]
            while len(self._seen) >= self.size:
                del self._seen[next(iter(self._seen))]
        self._seen[self._digest(username, password, stored)] = now + self.ttl


def generate_password() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(GENERATED_PASSWORD_LENGTH))


def parse_public_key(text: str, index: int) -> asyncssh.SSHKey:
    """An OpenSSH public key line; InvalidField naming the key otherwise."""
    shown = text.strip()[:40]
    try:
        return asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError, TypeError, UnicodeError) as exc:
        raise InvalidField(
            f"public_keys[{index}]",
            f"not an OpenSSH public key: {shown!r}",
        ) from exc


def canonical_key(key: asyncssh.SSHKey) -> str:
    """The key as one OpenSSH line without its comment (what matching compares)."""
    return " ".join(key.export_public_key("openssh").decode().split()[0:2])


@dataclass
class Credential:
    username: str
    container: str
    password_hash: str | None
    public_keys: list[str]
    permissions: list[Permission]
    created_at: float = field(default_factory=time.time)

    def document(self) -> dict[str, object]:
        return {
            "username": self.username,
            "container": self.container,
            "password_hash": self.password_hash,
            "public_keys": self.public_keys,
            "permissions": list(self.permissions),
            "created_at": self.created_at,
        }

    def accepts_key(self, key: asyncssh.SSHKey) -> bool:
        wanted = canonical_key(key)
        return any(known == wanted for known in self.public_keys)


@dataclass(frozen=True)
class Issued:
    """What POST answers: the credential and the password when lightd generated it."""

    credential: Credential
    generated_password: str | None
    replaced: Credential | None


class CredentialStore:
    """Credentials by username and by container; every change is written at once."""

    def __init__(self, store: DocumentStore) -> None:
        self._store = store
        self._by_user: dict[str, Credential] = {}

    def load(self) -> int:
        raw = self._store.read(DOCUMENT)
        self._by_user.clear()
        if isinstance(raw, dict):
            for item in raw.get("credentials", []):
                try:
                    cred = Credential(
                        username=str(item["username"]),
                        container=str(item["container"]),
                        password_hash=item.get("password_hash"),
                        public_keys=[str(k) for k in item.get("public_keys", [])],
                        permissions=normalized_permissions(item.get("permissions", [])),
                        created_at=float(item.get("created_at", 0.0)),
                    )
                except (KeyError, TypeError, ValueError):
                    continue
                self._by_user[cred.username] = cred
        return len(self._by_user)

    def _save(self) -> None:
        items = [cred.document() for cred in sorted(self._by_user.values(), key=_by_name)]
        self._store.write(DOCUMENT, {"credentials": items})

    def by_username(self, username: str) -> Credential | None:
        return self._by_user.get(username)

    def of_container(self, container: str) -> Credential | None:
        for cred in self._by_user.values():
            if cred.container == container:
                return cred
        return None

    def all(self) -> list[Credential]:
        return list(self._by_user.values())

    def issue(
        self,
        container: str,
        *,
        username: str | None,
        password: str | None,
        public_keys: list[str] | None,
        permissions: list[str] | None,
    ) -> Issued:
        """Create or replace the credential of ``container`` (validated first)."""
        name = username if username is not None else container
        problem = username_problem(name)
        if problem:
            raise InvalidField("username", problem)
        taken = self._by_user.get(name)
        if taken is not None and taken.container != container:
            raise UsernameTaken()
        if permissions is not None and (problem := permissions_problem(permissions)):
            raise InvalidField("permissions", problem)
        if password is not None and not (1 <= len(password.encode()) <= MAX_PASSWORD_BYTES):
            raise InvalidField("password", f"must be 1 to {MAX_PASSWORD_BYTES} bytes")
        keys = public_keys or []
        if len(keys) > MAX_PUBLIC_KEYS:
            raise InvalidField("public_keys", f"at most {MAX_PUBLIC_KEYS} keys")
        canonical = [canonical_key(parse_public_key(text, i)) for i, text in enumerate(keys)]
        generated = None
        if password is None and not canonical:
            generated = password = generate_password()
        cred = Credential(
            username=name,
            container=container,
            password_hash=hash_password(password) if password is not None else None,
            public_keys=canonical,
            permissions=normalized_permissions(
                permissions if permissions is not None else ("read", "write", "delete")
            ),
        )
        replaced = self.of_container(container)
        if replaced is not None:
            del self._by_user[replaced.username]
        self._by_user[name] = cred
        self._save()
        return Issued(credential=cred, generated_password=generated, replaced=replaced)

    def revoke(self, container: str) -> Credential:
        cred = self.of_container(container)
        if cred is None:
            raise CredentialNotFound()
        del self._by_user[cred.username]
        self._save()
        return cred

    def forget(self, container: str) -> Credential | None:
        """Remove the credential of a deleted container, if any."""
        cred = self.of_container(container)
        if cred is not None:
            del self._by_user[cred.username]
            self._save()
        return cred


def _by_name(cred: Credential) -> str:
    return cred.username
