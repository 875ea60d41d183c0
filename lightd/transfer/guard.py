"""The pull-from-URL guard: which URLs, addresses, redirects and file names are allowed.

Pure: no socket, no resolver, no file. The pull worker (:mod:`lightd.transfer.pull`)
asks :func:`parse_url` for the URL, resolves its host *once* itself and hands the
addresses to :func:`pick_address`, then connects to exactly the address picked (so a
name cannot resolve to a public address for the check and to a private one for the
connection). Every redirect goes through :func:`follow` and then the same steps again.

Refused unless an entry of ``volumes.pull_allow_networks`` holds the address: loopback,
link-local, private, multicast, unspecified, reserved and every other address that is
not globally routable (``100.64.0.0/10``, documentation ranges, ...). IPv4-mapped IPv6
addresses are judged as the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lightd.errors import PullRefused

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_REDIRECTS = 10
MAX_URL_LENGTH = 8192
MAX_NAME_BYTES = 255
DEFAULT_NAME = "download"
RESERVED_PREFIX = ".lightd-tmp-"
DEFAULT_PORTS = {"http": 80, "https": 443}
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class PullUrl:
    """An http(s) URL taken apart: where to connect and what to ask for."""

    scheme: str
    host: str  # a lowercase name, or an address in canonical form (no brackets)
    port: int
    target: str  # path and query, as sent in the request line

    @property
    def literal(self) -> IpAddress | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    @property
    def host_header(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == DEFAULT_PORTS[self.scheme]:
            return shown
        return f"{shown}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.target}"


def _canonical_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        name = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise PullRefused("host name is not valid") from None
    if not re.fullmatch(r"[a-z0-9_.-]+", name) or re.fullmatch(r"[0-9.]+|0x[0-9a-f.x]*", name):
        # Dotted numbers that are not a canonical IPv4 address (0x7f.1, 127.1):
        # resolvers read them differently, so they are refused outright.
        raise PullRefused("host name is not valid")
    return name


def parse_url(raw: str) -> PullUrl:
    """``raw`` as a :class:`PullUrl`; anything but a plain http(s) URL is refused."""
    if len(raw) > MAX_URL_LENGTH:
        raise PullRefused(f"URL longer than {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in raw):
        raise PullRefused("URL contains spaces or control characters")
    try:
        split = urllib.parse.urlsplit(raw)
        port = split.port
    except ValueError as exc:
        raise PullRefused(f"URL does not parse: {exc}") from None
    scheme = split.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise PullRefused("only http and https URLs can be pulled")
    if split.username is not None or split.password is not None:
        raise PullRefused("URLs with credentials are not pulled")
    host = (split.hostname or "").rstrip(".")
    if not host:
        raise PullRefused("URL has no host")
    host = _canonical_host(host)
    if port == 0:
        raise PullRefused("port 0 cannot be pulled from")
    target = split.path or "/"
    if split.query:
        target = f"{target}?{split.query}"
    return PullUrl(scheme, host, port or DEFAULT_PORTS[scheme], target)


def parse_networks(entries: Iterable[str]) -> tuple[IpNetwork, ...]:
    """The allow list as networks (``127.0.0.1`` means ``127.0.0.1/32``)."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _unmapped(address: IpAddress) -> IpAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def refusal(address: IpAddress, allowed: Sequence[IpNetwork]) -> str | None:
    """Why ``address`` may not be contacted, or None when it may."""
    address = _unmapped(address)
    if any(address.version == net.version and address in net for net in allowed):
        return None
    if address.is_loopback:
        kind = "loopback"
    elif address.is_link_local:
        kind = "link-local"
    elif address.is_multicast:
        kind = "multicast"
    elif address.is_unspecified:
        kind = "unspecified"
    elif address.is_private:
        kind = "private"
    elif not address.is_global:
        kind = "not globally routable"
    else:
        return None
    return f"{address} is a {kind} address"


def pick_address(host: str, addresses: Sequence[str], allowed: Sequence[IpNetwork]) -> str:
    """The first address ``host`` resolved to that may be contacted; refused if none.

    The connection is then made to that address and no other.
    """
    if not addresses:
        raise PullRefused(f"{host} does not resolve")
    reasons: list[str] = []
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        reason = refusal(address, allowed)
        if reason is None:
            return str(_unmapped(address))
        reasons.append(reason)
    if list(addresses) == [host]:  # an address literal: no resolution happened
        raise PullRefused(reasons[0])
    raise PullRefused(f"{host} resolves only to refused addresses ({'; '.join(reasons)})")


def follow(current: PullUrl, status: int, location: str | None, hops: int) -> PullUrl:
    """Where a redirect answer leads (``hops`` redirects followed so far, this one included)."""
    if status not in REDIRECT_CODES:
        raise PullRefused(f"answer {status} is not a redirect")
    if hops > MAX_REDIRECTS:
        raise PullRefused(f"more than {MAX_REDIRECTS} redirects")
    if not location:
        raise PullRefused(f"redirect {status} without a Location")
    return parse_url(urllib.parse.urljoin(current.url, location.strip()))


def _disposition_name(header: str) -> str | None:
    """The file name of a Content-Disposition header (``filename*`` preferred)."""
    star = re.search(r"filename\*\s*=\s*([^;]+)", header, re.IGNORECASE)
    if star:
        value = star.group(1).strip().strip('"')
        charset, _, rest = value.partition("'")
        _, _, encoded = rest.partition("'")
        if encoded:
            try:
                return urllib.parse.unquote(encoded, encoding=charset or "utf-8", errors="strict")
            except (LookupError, UnicodeDecodeError):
                pass
    plain = re.search(r'filename\s*=\s*("((?:[^"\\]|\\.)*)"|[^;]+)', header, re.IGNORECASE)
    if plain:
        quoted = plain.group(2)
        if quoted is not None:
            return re.sub(r"\\(.)", r"\1", quoted)
        return plain.group(1).strip()
    return None


def safe_name(candidate: str | None) -> str | None:
    """``candidate`` reduced to one harmless file name, or None when nothing is left.

    Only the last component counts (after ``/`` or ``\\``); control characters are
    dropped; ``.``, ``..``, names lightd reserves and empty names give None; the name is
    cut to 255 UTF-8 bytes keeping its extension.
    """
    if candidate is None:
        return None
    name = re.split(r"[/\\]", candidate)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf"))
    name = name.strip().rstrip(".") if name.strip() not in (".", "..") else ""
    if not name or name.startswith(RESERVED_PREFIX):
        return None
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        ext_bytes = (dot + ext).encode("utf-8") if stem and len(ext) <= 16 else b""
        keep = encoded[: MAX_NAME_BYTES - len(ext_bytes)].decode("utf-8", "ignore")
        name = keep + ext_bytes.decode("utf-8")
    return name


def file_name(url: PullUrl, disposition: str | None, *, use_header: bool) -> str:
    """The name a pulled file gets: the header's (if asked and usable), the URL's, or a default."""
    if use_header and disposition:
        named = safe_name(_disposition_name(disposition))
        if named:
            return named
    path = url.target.split("?", 1)[0]
    return safe_name(urllib.parse.unquote(path)) or DEFAULT_NAME
