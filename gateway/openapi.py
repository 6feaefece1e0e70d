"""The OpenAPI description of the collection routes, served at ``/openapi.json``.

It is built from the configured clients: each client module may declare
``OPENAPI``, a mapping of ``"METHOD /path"`` to an OpenAPI operation object;
a route it does not describe gets a generic operation (any body, a 2xx or a
4xx). Fuzzers (schemathesis) read it to know what to throw at each route, and
integrators read it to know what each route takes.
"""

from __future__ import annotations

from typing import Any

from gateway.config import Container

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {}},
}

_ERROR_RESPONSES = {
    status: {"description": text, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for status, text in (
        ("400", "the request is malformed; `error` names the problem"),
        ("401", "the signature is missing or wrong"),
        ("403", "the origin is not allowed"),
        ("405", "method not allowed"),
        ("413", "the body is larger than limits.max_body_bytes"),
        ("415", "unsupported content type"),
        ("503", "the gateway cannot take the request now (outbox over storage.max_outbox_depth, too many requests "
                "in progress, or storage unable to commit); nothing of it was stored: send it again after "
                "Retry-After seconds"),
    )
}
_ERROR_RESPONSES["503"]["headers"] = {
    "Retry-After": {"description": "Seconds to wait before sending the request again.", "schema": {"type": "integer"}},
}


def _generic_operation(method: str, path: str, client: str) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": f"{client}_{method.lower()}_{path.strip('/').replace('/', '_').replace('-', '_')}",
        "tags": [client],
        "responses": {"2XX": {"description": "accepted"}, **_ERROR_RESPONSES},
    }
    if method in ("POST", "PUT", "PATCH"):
        operation["requestBody"] = {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
    return operation


def build_openapi(container: Container) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for entry in container.clients:
        declared: dict[str, Any] = getattr(entry.module, "OPENAPI", {})
        for method, path in entry.module.ROUTES:
            operation = declared.get(f"{method} {path}") or _generic_operation(method, path, entry.config.type)
            operation = {"tags": [entry.config.type], **operation}
            operation.setdefault("responses", {})
            for status, response in _ERROR_RESPONSES.items():
                operation["responses"].setdefault(status, response)
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "Tagging gateway collection API", "version": "1"},
        "paths": paths,
        "components": {"schemas": {"Error": ERROR_SCHEMA}},
    }
