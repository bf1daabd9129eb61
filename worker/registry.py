"""Confluent Schema Registry client (adapter): fetch writer schemas by ID, register ours.

Two calls of the registry's REST API, over a caller-owned `aiohttp.ClientSession`:

- ``GET {base}/schemas/ids/{id}`` → ``{"schema": "<json text>"}``: the writer schema of a framed
  message. 404 means the registry does not know the ID (`fetch` returns ``None``; the decoder then
  rejects those messages).
- ``POST {base}/subjects/{subject}/versions`` ``{"schema": "<json text>"}`` → ``{"id": n}``: the
  producer registers the bundled schema.

Errors are translated here, once, into `worker.errors` (aiohttp exceptions never leave):

=====================================================  ==========================================
what happened                                          raised
=====================================================  ==========================================
connection failure, timeout, 5xx, 429, 408,            `TransientError` (``status``, and
unexpected reply (fetch: any status but 200 and 404)   ``retry_after`` from ``Retry-After``)
register: any other 4xx (409 incompatible schema,      `FatalError`: retrying cannot help
422 invalid schema, 401/403)
=====================================================  ==========================================

A base URL may carry credentials (``https://user:secret@host``); error messages show it without them.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from yarl import URL

from worker.errors import FatalError, TransientError

__all__ = ["REGISTRY_CONTENT_TYPE", "SchemaRegistryClient"]

REGISTRY_CONTENT_TYPE: Final = "application/vnd.schemaregistry.v1+json"
_RETRYABLE_4XX: Final = frozenset({408, 429})


class SchemaRegistryClient:
    """Fetch and register Avro schemas; every failure surfaces as a `worker.errors` type."""

    def __init__(
        self, base_url: str, session: aiohttp.ClientSession, timeout_seconds: float = 10
    ) -> None:
        self._base = base_url.rstrip("/")
        self._shown = str(URL(self._base).with_user(None))  # for messages: no credentials
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    async def fetch(self, schema_id: int) -> str | None:
        """The schema text registered under ``schema_id``, or ``None`` if the registry has none."""
        path = f"/schemas/ids/{int(schema_id)}"
        status, body, retry_after = await self._call("GET", path, None)
        if status == 404:
            return None
        if status != 200:
            raise _transient(f"schema ID {schema_id}: HTTP {status}", status, retry_after)
        schema = body.get("schema") if isinstance(body, dict) else None
        if not isinstance(schema, str):
            raise TransientError(f"schema ID {schema_id}: reply has no 'schema' string", status=200)
        return schema

    async def register(self, subject: str, schema_json: str) -> int:
        """Register ``schema_json`` under ``subject``; return its global schema ID."""
        path = f"/subjects/{quote(subject, safe='')}/versions"
        status, body, retry_after = await self._call("POST", path, {"schema": schema_json})
        where = f"registering subject {subject!r}"
        if 200 <= status < 300:
            schema_id = body.get("id") if isinstance(body, dict) else None
            if type(schema_id) is not int:
                raise TransientError(f"{where}: reply has no integer 'id'", status=status)
            return schema_id
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            raise FatalError(f"{where}: HTTP {status}: {_registry_message(body)}")
        raise _transient(f"{where}: HTTP {status}", status, retry_after)

    async def _call(
        self, method: str, path: str, payload: dict[str, Any] | None
    ) -> tuple[int, Any, float | None]:
        """(status, JSON body or None, Retry-After seconds); network trouble → TransientError."""
        data = None if payload is None else json.dumps(payload)
        headers = {"Accept": REGISTRY_CONTENT_TYPE}
        if data is not None:
            headers["Content-Type"] = REGISTRY_CONTENT_TYPE
        try:
            async with self._session.request(
                method, self._base + path, data=data, headers=headers, timeout=self._timeout
            ) as response:
                raw = await response.read()
                return response.status, _json_or_none(raw), _retry_after(response.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:  # TimeoutError: asyncio's, too
            raise TransientError(
                f"schema registry {self._shown} unreachable: {type(exc).__name__}"
            ) from exc


def _transient(message: str, status: int, retry_after: float | None) -> TransientError:
    return TransientError(message, status=status, retry_after=retry_after)


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:  # an HTML error page from a proxy, say, or bytes that are not UTF-8
        return None


def _retry_after(headers: Any) -> float | None:
    """Retry-After in seconds; the HTTP-date form is ignored (the caller's backoff applies)."""
    value = headers.get("Retry-After")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < math.inf else None


def _registry_message(body: Any) -> str:
    """The registry's own error text (``{"error_code": ..., "message": ...}``), shortened."""
    message = body.get("message") if isinstance(body, dict) else None
    return str(message)[:200] if message else "no message"
