"""JSON answers of the sandbox and the errors handlers raise to produce them.

Handlers raise an `HttpError` instead of building error responses; the app's middleware turns it
into the response. Two error shapes exist, one per API the sandbox imitates:

- InMobi (`ApiError`, CONTRACT section 5): ``{"status": "ERROR", "code": <http>, "message": "…"}``
- Confluent Schema Registry (`RegistryError`): ``{"error_code": 40403, "message": "…"}``

Messages never contain a secret key: they are written by the sandbox, never echoed from headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web

__all__ = ["REGISTRY_CONTENT_TYPE", "ApiError", "HttpError", "RegistryError", "reason_of"]

REGISTRY_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def reason_of(status: int) -> str:
    """The standard phrase of an HTTP status, or ``HTTP <n>`` for an unassigned one."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


class HttpError(Exception):
    """An error answer; subclasses decide the body shape."""

    def __init__(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        raise NotImplementedError

    def response(self) -> web.Response:
        return web.json_response(
            self.body(), status=self.status, headers=self.headers, content_type=self.content_type
        )

    content_type = "application/json"


class ApiError(HttpError):
    """An InMobi-style error: ``{"status": "ERROR", "code": <http>, "message": "…"}``."""

    def body(self) -> dict[str, Any]:
        return {"status": "ERROR", "code": self.status, "message": self.message}


class RegistryError(HttpError):
    """A Schema Registry error: ``{"error_code": <code>, "message": "…"}``."""

    content_type = REGISTRY_CONTENT_TYPE

    def __init__(self, status: int, message: str, *, error_code: int | None = None) -> None:
        super().__init__(status, message)
        self.error_code = error_code if error_code is not None else status

    def body(self) -> dict[str, Any]:
        return {"error_code": self.error_code, "message": self.message}
