"""A minimal Confluent Schema Registry, mounted by the sandbox under ``/registry``.

Just enough for the producer to register the value schema and for the worker to fetch a writer
schema by ID (``SCHEMA_REGISTRY_URL=http://host:port/registry``):

- ``POST /registry/subjects/{subject}/versions`` ``{"schema": "<json text>"}`` -> ``{"id": n}``
- ``GET  /registry/schemas/ids/{id}`` -> ``{"schema": "<json text>"}`` or 404 error 40403
- ``GET  /registry/subjects`` -> ``["subject", …]``
- ``GET  /registry/subjects/{subject}/versions`` -> ``[1, 2, …]``
- ``GET  /registry/subjects/{subject}/versions/{version|latest}``
  -> ``{"subject", "version", "id", "schema"}``

As in the real registry, IDs are global and start at 1, and one schema gets one ID whatever the
subject: schemas are compared by their canonical JSON (keys sorted, no whitespace), so registering
the same schema again returns the same ID and adds no version. The registry is not cleared by
``POST /_sandbox/reset`` (a worker may have cached its IDs) unless ``?registry=true`` is given.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from worker.sandbox.responses import REGISTRY_CONTENT_TYPE, RegistryError

__all__ = ["REGISTRY", "SchemaStore", "registry_routes"]


class SchemaStore:
    """Schemas by global ID, and each subject's versions (a list of schema IDs)."""

    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self._ids: dict[str, int] = {}  # canonical text -> ID
        self.subjects: dict[str, list[int]] = {}

    def register(self, subject: str, schema: str) -> int:
        """The ID of this schema under this subject; raises ValueError if it is not JSON."""
        canonical = json.dumps(json.loads(schema), sort_keys=True, separators=(",", ":"))
        schema_id = self._ids.get(canonical)
        if schema_id is None:
            schema_id = len(self.schemas) + 1
            self._ids[canonical] = schema_id
            self.schemas[schema_id] = schema
        versions = self.subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return schema_id

    def reset(self) -> None:
        self.schemas.clear()
        self._ids.clear()
        self.subjects.clear()


REGISTRY = web.AppKey("sandbox_registry", SchemaStore)


def _answer(body: Any) -> web.Response:
    return web.json_response(body, content_type=REGISTRY_CONTENT_TYPE)


def _schema_text(body: Any) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise ValueError('the body must be {"schema": "<json text>"}')
    if body.get("schemaType", "AVRO") != "AVRO":
        raise ValueError("only AVRO schemas are supported")
    return str(body["schema"])


async def _register(request: web.Request) -> web.Response:
    try:
        schema = _schema_text(json.loads(await request.read()))
        schema_id = request.app[REGISTRY].register(request.match_info["subject"], schema)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise RegistryError(422, f"Invalid schema: {exc}", error_code=42201) from exc
    return _answer({"id": schema_id})


async def _schema_by_id(request: web.Request) -> web.Response:
    raw = request.match_info["schema_id"]
    schema = request.app[REGISTRY].schemas.get(int(raw)) if raw.isdigit() else None
    if schema is None:
        raise RegistryError(404, "Schema not found", error_code=40403)
    return _answer({"schema": schema})


async def _subjects(request: web.Request) -> web.Response:
    return _answer(sorted(request.app[REGISTRY].subjects))


def _versions_of(request: web.Request) -> list[int]:
    versions = request.app[REGISTRY].subjects.get(request.match_info["subject"])
    if versions is None:
        raise RegistryError(404, "Subject not found", error_code=40401)
    return versions


async def _versions(request: web.Request) -> web.Response:
    return _answer(list(range(1, len(_versions_of(request)) + 1)))


async def _version(request: web.Request) -> web.Response:
    versions, raw = _versions_of(request), request.match_info["version"]
    number = len(versions) if raw in ("latest", "-1") else int(raw) if raw.isdigit() else 0
    if not 1 <= number <= len(versions):
        raise RegistryError(404, "Version not found", error_code=40402)
    schema_id = versions[number - 1]
    subject = request.match_info["subject"]
    schema = request.app[REGISTRY].schemas[schema_id]
    return _answer({"subject": subject, "version": number, "id": schema_id, "schema": schema})


def registry_routes(prefix: str = "/registry") -> list[web.RouteDef]:
    """The registry's routes, named ``registry.*`` (the app counts requests by that name)."""
    return [
        web.post(f"{prefix}/subjects/{{subject}}/versions", _register, name="registry.register"),
        web.get(f"{prefix}/schemas/ids/{{schema_id}}", _schema_by_id, name="registry.schema"),
        web.get(f"{prefix}/subjects", _subjects, name="registry.subjects"),
        web.get(f"{prefix}/subjects/{{subject}}/versions", _versions, name="registry.versions"),
        web.get(
            f"{prefix}/subjects/{{subject}}/versions/{{version}}", _version, name="registry.version"
        ),
    ]
