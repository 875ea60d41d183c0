"""The port pool document ``desired/ports.json`` and its entry-by-entry parser.

The document is ``{"ports": [{"ip", "port", "protocol", "reserved"}]}``. A port's
identity is its address and number (``ip``, ``port``); addresses are normalised with
:mod:`ipaddress` so ``0:0::1`` and ``::1`` name the same port. The file may be edited by
hand, so :func:`parse_pool` never rejects the whole pool for one bad entry: each invalid
entry (bad address, port outside 1-65535, unknown protocol, unknown field, duplicate) is
kept verbatim as an :class:`InvalidEntry` with its index and reason, and the valid
entries stay usable. Only a document that is not JSON, not an object, or whose
``ports`` is not a list is refused as a whole (:class:`PoolDocumentError`).

Pure data and pure functions: this module must not import asyncio, quart or docker,
and must not read or write files.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
)

PORTS_DOCUMENT = "ports.json"
MIN_PORT = 1
MAX_PORT = 65535

Protocol = Literal["tcp", "udp"]
PROTOCOLS: tuple[Protocol, ...] = ("tcp", "udp")


def normalise_ip(value: str) -> str:
    """The canonical text of an IPv4 or IPv6 address; ValueError says why it is not one."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if "%" in text:
        raise ValueError(f"{value!r} has a zone index, which is not supported")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid IPv4 or IPv6 address") from None
    return str(address)


IpAddress = Annotated[str, AfterValidator(normalise_ip)]
PortNumber = Annotated[StrictInt, Field(ge=MIN_PORT, le=MAX_PORT)]

PortKey = tuple[str, int]
"""(normalised ip, port): the identity of a pool entry."""

BindingKey = tuple[str, int, str]
"""(normalised ip, port, protocol): how a container publishes a port."""


class PortEntry(BaseModel):
    """One valid entry of the pool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ip: IpAddress
    port: PortNumber
    protocol: Protocol = "tcp"
    reserved: StrictBool = False

    @property
    def key(self) -> PortKey:
        return (self.ip, self.port)

    @property
    def binding(self) -> BindingKey:
        return (self.ip, self.port, self.protocol)

    def document(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "port": self.port,
            "protocol": self.protocol,
            "reserved": self.reserved,
        }


class PortsDocument(BaseModel):
    """The whole ``ports.json``, for its JSON Schema (lightd parses it entry by entry)."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, title="lightd port pool document"
    )

    schema_uri: str | None = Field(
        default=None,
        alias="$schema",
        description="Where an editor finds this document's JSON Schema; lightd ignores it.",
    )
    ports: list[PortEntry] = Field(default_factory=list)


@dataclass(frozen=True)
class InvalidEntry:
    """An entry of a hand-edited file that is not valid; kept verbatim so nothing is lost."""

    raw: Any
    reason: str


Slot = PortEntry | InvalidEntry


@dataclass(frozen=True)
class EntryProblem:
    index: int
    reason: str


class PoolDocumentError(ValueError):
    """The document as a whole cannot be read as a pool; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class ParsedPool:
    """The pool in file order: valid entries and invalid ones at their positions."""

    slots: tuple[Slot, ...]
    extra: dict[str, Any]

    @cached_property
    def entries(self) -> tuple[PortEntry, ...]:
        """The valid entries (computed once: every admission asks)."""
        return tuple(slot for slot in self.slots if isinstance(slot, PortEntry))

    @cached_property
    def by_key(self) -> dict[PortKey, PortEntry]:
        """The valid entries by (ip, port): the first one of a key, as a scan finds it."""
        found: dict[PortKey, PortEntry] = {}
        for entry in self.entries:
            found.setdefault(entry.key, entry)
        return found

    @property
    def problems(self) -> tuple[EntryProblem, ...]:
        return tuple(
            EntryProblem(index=index, reason=slot.reason)
            for index, slot in enumerate(self.slots)
            if isinstance(slot, InvalidEntry)
        )


def describe_entry_error(exc: ValidationError) -> str:
    """``port: Input should be less than or equal to 65535`` for the first problem."""
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    kind = first["type"]
    if kind == "missing":
        return f"missing field '{loc}'"
    if kind == "extra_forbidden":
        return f"unknown field '{loc}'"
    message = str(first["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return f"{loc}: {message}" if loc else message


def parse_entry(raw: Any) -> PortEntry:
    """One entry; ValueError with a reason when it is invalid."""
    if not isinstance(raw, dict):
        raise ValueError("entry must be an object")
    try:
        return PortEntry.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(describe_entry_error(exc)) from None


def parse_pool_entries(items: list[Any]) -> tuple[Slot, ...]:
    """Every item as a valid entry or an invalid one; a repeated ip+port is a duplicate."""
    slots: list[Slot] = []
    first_index: dict[PortKey, int] = {}
    for index, raw in enumerate(items):
        try:
            entry = parse_entry(raw)
        except ValueError as exc:
            slots.append(InvalidEntry(raw=raw, reason=str(exc)))
            continue
        earlier = first_index.get(entry.key)
        if earlier is not None:
            slots.append(
                InvalidEntry(
                    raw=raw,
                    reason=f"duplicate of entry {earlier} ({format_key(entry.key)})",
                )
            )
            continue
        first_index[entry.key] = index
        slots.append(entry)
    return tuple(slots)


def parse_pool(document: Any) -> ParsedPool:
    """A decoded document as a pool; PoolDocumentError when its shape is wrong."""
    if not isinstance(document, dict):
        raise PoolDocumentError("the document must be a JSON object with a 'ports' list")
    items = document.get("ports", [])
    if not isinstance(items, list):
        raise PoolDocumentError("'ports' must be a list")
    extra = {key: value for key, value in document.items() if key != "ports"}
    return ParsedPool(slots=parse_pool_entries(items), extra=extra)


def parse_pool_bytes(data: bytes | None) -> ParsedPool:
    """The file's bytes as a pool (None, a missing file, is an empty pool)."""
    if data is None or not data.strip():
        return ParsedPool(slots=(), extra={})
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PoolDocumentError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    return parse_pool(document)


def pool_document(slots: tuple[Slot, ...] | list[Slot], extra: dict[str, Any]) -> dict[str, Any]:
    """The document to write: valid entries canonical, invalid ones exactly as found."""
    document = dict(extra)
    document["ports"] = [
        slot.document() if isinstance(slot, PortEntry) else slot.raw for slot in slots
    ]
    return document


def format_key(key: PortKey) -> str:
    ip, port = key
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def parse_port_range(text: str) -> range:
    """``"25565-25600"`` (or ``"25565"``) as an inclusive range; ValueError says why not."""
    if not isinstance(text, str):
        raise ValueError("must be a string like '25565-25600'")
    first, sep, last = text.strip().partition("-")
    try:
        low = int(first.strip(), 10)
        high = int(last.strip(), 10) if sep else low
    except ValueError:
        raise ValueError(f"{text!r} is not a range like '25565-25600'") from None
    for bound in (low, high):
        if not MIN_PORT <= bound <= MAX_PORT:
            raise ValueError(f"port {bound} is outside {MIN_PORT}-{MAX_PORT}")
    if low > high:
        raise ValueError(f"{text!r} starts after it ends")
    return range(low, high + 1)
