"""A small S3 client: SigV4-signed path-style requests, multipart upload with retries.

Uploads stream: parts of ``part_size`` bytes are sent as the archive is produced, each
retried with exponential backoff on connection errors, 429 and 5xx; refusals (4xx) fail
at once with S3's own error code. The object exists only after the upload is completed;
on any failure the upload is aborted, so an interrupted backup leaves no object behind
(and a killed daemon's upload is aborted at the next start from the id in its record).
Blocking (``httpx.Client``): run in a worker thread. This module must not read volumes.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from lightd.errors import LightdError

if TYPE_CHECKING:
    import httpx

EMPTY_SHA = hashlib.sha256(b"").hexdigest()


class S3Error(LightdError):
    message = "S3 request failed"


@dataclass(frozen=True)
class S3Config:
    endpoint: str
    region: str
    bucket: str
    prefix: str
    access_key: str
    secret_key: str
    part_size: int = 16 * 1024 * 1024
    retries: int = 10
    retry_initial_seconds: float = 0.5
    retry_max_seconds: float = 30.0
    timeout_seconds: float = 60.0


def _quote(text: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(text, safe=safe)


def sign(
    config: S3Config,
    method: str,
    url: httpx.URL,
    payload_sha: str,
    now: datetime.datetime,
) -> dict[str, str]:
    """The SigV4 headers (``Authorization``, ``x-amz-date``, ``x-amz-content-sha256``)."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    host = url.netloc.decode()
    query = sorted(urllib.parse.parse_qsl(url.query.decode(), keep_blank_values=True))
    canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in query)
    headers = {"host": host, "x-amz-content-sha256": payload_sha, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical_headers = "".join(f"{k}:{headers[k]}\n" for k in sorted(headers))
    canonical = "\n".join(
        [method, url.raw_path.split(b"?")[0].decode(), canonical_query, canonical_headers,
         signed, payload_sha]
    )  # fmt: skip
    scope = f"{day}/{config.region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{config.secret_key}".encode()
    for piece in (day, config.region, "s3", "aws4_request"):
        key = hmac.new(key, piece.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_sha,
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={config.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        ),
    }


def _code_of(body: bytes) -> str:
    found = re.search(rb"<Code>([^<]+)</Code>", body)
    return found.group(1).decode() if found else ""


class S3Client:
    def __init__(self, config: S3Config, *, sleep: Callable[[float], None] = time.sleep) -> None:
        import httpx

        self.config = config
        self.sleep = sleep
        self.http = httpx.Client(timeout=config.timeout_seconds)

    def close(self) -> None:
        self.http.close()

    def key_for(self, name: str) -> str:
        prefix = self.config.prefix.strip("/")
        return f"{prefix}/{name}" if prefix else name

    def _url(self, key: str, query: str = "") -> httpx.URL:
        import httpx

        base = self.config.endpoint.rstrip("/")
        path = _quote(f"/{self.config.bucket}/{key}", safe="/-_.~")
        return httpx.URL(f"{base}{path}" + (f"?{query}" if query else ""))

    def request(
        self, method: str, key: str, query: str = "", body: bytes = b"", *, stream: bool = False
    ) -> httpx.Response:
        """One signed request, retried with backoff on connection errors, 429 and 5xx."""
        import httpx

        url = self._url(key, query)
        payload_sha = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA
        delay = self.config.retry_initial_seconds
        attempts = self.config.retries + 1
        for attempt in range(1, attempts + 1):
            headers = sign(
                self.config, method, url, payload_sha, datetime.datetime.now(datetime.UTC)
            )
            problem: str
            try:
                request = self.http.build_request(method, url, headers=headers, content=body)
                response = self.http.send(request, stream=stream)
            except httpx.HTTPError as exc:
                problem = f"S3 endpoint {self.config.endpoint} unreachable: {exc}"
            else:
                if response.status_code < 400:
                    return response
                data = response.read()
                response.close()
                code = _code_of(data) or f"HTTP {response.status_code}"
                problem = f"S3 refused {method} {key}: {code}"
                if response.status_code in (401, 403):
                    raise S3Error(f"{problem} (check backups.s3 access_key and secret_key)")
                if response.status_code < 500 and response.status_code != 429:
                    raise S3Error(problem)
            if attempt == attempts:
                raise S3Error(f"{problem} (after {attempts} attempts)")
            self.sleep(delay)
            delay = min(delay * 2, self.config.retry_max_seconds)
        raise AssertionError("unreachable")

    # -- multipart -------------------------------------------------------------------

    def create_upload(self, key: str) -> str:
        response = self.request("POST", key, "uploads=")
        found = re.search(rb"<UploadId>([^<]+)</UploadId>", response.content)
        if not found:
            raise S3Error("S3 answered a multipart upload without an UploadId")
        return found.group(1).decode()

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        query = f"partNumber={number}&uploadId={_quote(upload_id)}"
        response = self.request("PUT", key, query, data)
        return str(response.headers.get("ETag", ""))

    def complete(self, key: str, upload_id: str, etags: list[str]) -> None:
        parts = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(tag)}</ETag></Part>"
            for n, tag in enumerate(etags, start=1)
        )
        body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        response = self.request("POST", key, f"uploadId={_quote(upload_id)}", body)
        if b"<Error>" in response.content:
            raise S3Error(f"S3 refused to complete the upload: {_code_of(response.content)}")

    def abort(self, key: str, upload_id: str) -> None:
        self.request("DELETE", key, f"uploadId={_quote(upload_id)}")

    # -- objects -----------------------------------------------------------------------

    def read(self, key: str) -> Iterator[bytes]:
        response = self.request("GET", key, stream=True)
        try:
            yield from response.iter_bytes(1024 * 1024)
        finally:
            response.close()

    def delete(self, key: str) -> None:
        self.request("DELETE", key)

    def exists(self, key: str) -> bool:
        try:
            self.request("HEAD", key)
        except S3Error as exc:
            if "404" in exc.message or "NoSuchKey" in exc.message:
                return False
            raise
        return True


class MultipartWrite:
    """A sink for the archive stream: buffers parts and uploads each when full."""

    def __init__(self, client: S3Client, key: str, on_upload_id: Callable[[str], None]) -> None:
        self.client = client
        self.key = key
        self.upload_id = client.create_upload(key)
        on_upload_id(self.upload_id)
        self._buffer = bytearray()
        self._etags: list[str] = []

    def write(self, data: bytes) -> None:
        self._buffer += data
        size = self.client.config.part_size
        while len(self._buffer) >= size:
            self._send(bytes(self._buffer[:size]))
            del self._buffer[:size]

    def _send(self, data: bytes) -> None:
        number = len(self._etags) + 1
        self._etags.append(self.client.upload_part(self.key, self.upload_id, number, data))

    def publish(self) -> str:
        if self._buffer or not self._etags:
            self._send(bytes(self._buffer))
            self._buffer.clear()
        self.client.complete(self.key, self.upload_id, self._etags)
        return self.key

    def discard(self) -> None:
        with contextlib.suppress(LightdError):
            self.client.abort(self.key, self.upload_id)
