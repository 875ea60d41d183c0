"""The one exception tree of lightd.

Every module raises these (foreign exceptions are translated at their boundary with
``raise ... from exc``); ``lightd.api.errors`` maps them to HTTP in one table. This
module must not know about HTTP, Quart or docker-py.

The tree as the code has it (HTTP status where the API answers with one; classes
defined elsewhere name their module)::

    LightdError                   base of every error lightd raises on purpose
    ├── InvalidRequest            bad input from a caller                   (400)
    │   ├── InvalidField          one named field is wrong                  (400)
    │   ├── MalformedBody         body is not JSON                          (400)
    │   ├── PathTraversal         a path would leave its volume             (400)
    │   ├── PortExists            the ip+port is already in the pool        (400)
    │   ├── PortNotInPool         a binding names an unpooled port          (400)
    │   ├── ArchiveRejected       hostile archive or a limit exceeded       (400)
    │   └── PullRefused           a pull URL or address the guard refuses   (400)
    ├── Unauthorized              missing or wrong token                    (401)
    ├── Forbidden                 vendor header missing                     (403)
    │   └── FileDenied            the template's file_denylist matches      (403)
    ├── NotFound                  a named thing does not exist              (404)
    │   ├── PortNotFound          the ip+port is not in the pool            (404)
    │   ├── NoAvailablePorts      no free, bindable port is left            (404)
    │   ├── VolumeNotFound        ``Volume not found``                      (404)
    │   ├── FileNotFound          ``File not found``                        (404)
    │   ├── PullNotFound          ``Pull not found``                        (404)
    │   ├── TransferNotFound      ``Transfer not found``                    (404)
    │   └── ContainerNotFound     ``Container not found``  (containers.service)
    ├── Conflict                  the request collides with state           (409)
    │   ├── PortInUse             reserving a port already in use           (409)
    │   ├── PortBound             a container binds the port                (409)
    │   ├── PoolDocumentInvalid   ports.json cannot be read as a pool       (409)
    │   ├── FileExists            the target path is taken                  (409)
    │   ├── VolumeInUse           a container document uses the volume      (409)
    │   ├── DiskLimitConflict     a limit change the volume cannot take     (409)
    │   ├── ContainerExists       the internal_id is taken (containers.service)
    │   └── ContainerNotRunning   console input to a stopped container (containers.service)
    ├── PayloadTooLarge           body over its limit                       (413)
    ├── TooManyRequests           a per-volume or per-node count is reached (429)
    ├── InsufficientStorage       the disk is full                          (507)
    │   └── DiskLimitExceeded     the write would pass the volume's limit   (507)
    ├── StoreError                a document could not be read/written      (500)
    ├── FilePermissionDenied      the OS refused a volume file access       (500)
    ├── ConfigError               the configuration is invalid
    ├── SpecInvalid               a spec cannot be applied as it is: wait for a new one
    ├── IllegalTransition         an observed-state move the transition table forbids
    └── EngineError               anything the Docker engine said
        ├── EngineUnavailable     transient: unreachable, timeout, 5xx
        ├── EngineNotFound        the object does not exist
        │   └── ImageNotFound     the image is absent (and cannot be pulled)
        ├── EngineConflict        name taken, removal in progress, ...
        └── EngineRequestError    the engine refused the request (4xx)

    Outside the tree (they never leave their module's callers):
    ValueError
    └── PoolDocumentError         ports.json does not parse       (spec.ports)
    Exception
    ├── ApiError                  the daemon answered an error    (cli.client)
    │   └── DaemonUnreachable     no daemon answers               (cli.client)
    ├── PanelUnavailable          the panel cannot be reached     (remote.client)
    └── PanelRefused              the panel refused a delivery    (remote.client)

Errors carry a message worded for the caller; where the contract gives a wording
(``Container not found``) the message is exactly that.
"""

from __future__ import annotations


class LightdError(Exception):
    """Base of every error lightd raises on purpose."""

    message: str = "Internal error"

    def __init__(self, message: str | None = None) -> None:
        if message is not None:
            self.message = message
        super().__init__(self.message)


class InvalidRequest(LightdError):
    message = "Invalid request"


class InvalidField(InvalidRequest):
    """A single field of a request or document is invalid; ``field`` names it."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"Invalid field '{field}': {reason}")


class MalformedBody(InvalidRequest):
    message = "Malformed JSON body"


class PathTraversal(InvalidRequest):
    message = "Invalid path: path traversal detected"


class PortExists(InvalidRequest):
    message = "Port already exists in pool"


class PortNotInPool(InvalidRequest):
    message = "Invalid port binding: port not in network pool"


class ArchiveRejected(InvalidRequest):
    """An archive is hostile or exceeds a limit; the message says which and why."""

    message = "Archive rejected"


class PullRefused(InvalidRequest):
    """The pull guard refused a URL, an address it resolves to, or a redirect."""

    message = "Pull refused"

    def __init__(self, reason: str) -> None:
        super().__init__(f"Pull refused: {reason}")


class Unauthorized(LightdError):
    message = "Missing or invalid authorization token"


class Forbidden(LightdError):
    message = "Invalid vendor header"


class FileDenied(Forbidden):
    """The path matches the ``file_denylist`` of a template the volume's containers use."""

    message = "File is denied by the template"


class NotFound(LightdError):
    message = "Not found"


class PortNotFound(NotFound):
    message = "Port not found in pool"


class NoAvailablePorts(NotFound):
    message = "No available ports"


class VolumeNotFound(NotFound):
    message = "Volume not found"


class FileNotFound(NotFound):
    message = "File not found"


class PullNotFound(NotFound):
    message = "Pull not found"


class TransferNotFound(NotFound):
    message = "Transfer not found"


class Conflict(LightdError):
    message = "Conflict"


class PortInUse(Conflict):
    message = "Port already in use"


class PortBound(Conflict):
    """A container document binds the port; ``container`` is its internal_id."""

    def __init__(self, container: str) -> None:
        self.container = container
        super().__init__(f"Port is in use by container {container}")


class PoolDocumentInvalid(Conflict):
    """The pool document cannot be parsed, so lightd refuses to overwrite it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"Port pool document ports.json is invalid ({reason}); fix it first")


class FileExists(Conflict):
    message = "File already exists"


class VolumeInUse(Conflict):
    message = "Volume is in use by a container"


class DiskLimitConflict(Conflict):
    """A disk limit change the volume cannot take now (shrink below usage, ...)."""

    message = "Disk limit cannot be changed"


class PayloadTooLarge(LightdError):
    message = "Request body too large"


class TooManyRequests(LightdError):
    message = "Too many requests"


class InsufficientStorage(LightdError):
    message = "Insufficient storage"


class DiskLimitExceeded(InsufficientStorage):
    """A write would pass the volume's disk limit; nothing of it was kept."""

    message = "Disk limit exceeded"


class StoreError(LightdError):
    message = "Database operation failed"


class FilePermissionDenied(LightdError):
    """The operating system refused access to a file in a volume (the contract's 500)."""

    message = "Failed to write file: permission denied"


class ConfigError(LightdError):
    message = "Invalid configuration"


class EngineError(LightdError):
    """Base of what the Docker adapter raises; ``transient`` says whether a retry may help."""

    message = "Docker engine error"
    transient = False


class EngineUnavailable(EngineError):
    message = "Docker engine unavailable"
    transient = True


class EngineNotFound(EngineError):
    message = "Docker object not found"


class ImageNotFound(EngineNotFound):
    message = "Failed to create Docker container: image not found"


class EngineConflict(EngineError):
    message = "Docker engine conflict"


class EngineRequestError(EngineError):
    message = "Docker engine refused the request"


class SpecInvalid(LightdError):
    """The spec cannot be applied as it is (e.g. its image is missing); wait for a change."""

    message = "Invalid spec"


class IllegalTransition(LightdError):
    """An observed-state change the transition table forbids; names both states."""

    def __init__(self, *, field: str, target: str, expected: tuple[str, ...], actual: str) -> None:
        self.field = field
        self.target = target
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"Illegal {field} move to {target}: expected {' or '.join(expected)}, found {actual}"
        )
