"""The OpenAPI 3.1 document of the control API, generated from the routes' own models.

Sits beside farm.master.http.routes: every `Route` on the app (see `served_routes`) becomes an
operation; its path and query models become parameters, its body and answer models
`components/schemas` entries (pydantic's JSON Schema, which OpenAPI 3.1 takes as it is).
Nothing here is written by hand but the prose, so the document cannot drift from what the
API enforces. Served at GET /api/v1/openapi.json; tests check it with openapi-spec-validator.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from farm import __version__
from farm.master.http.routes import Call, ErrorBody, Route, served_routes

REF = "#/components/schemas/{model}"
_STATUS_TEXT = {
    200: "OK",
    400: "Malformed request (not JSON, a parameter given twice)",
    401: "A token is set and the request did not carry it",
    403: "Refused: a browser's request from another origin (a foreign Origin header)",
    404: "No such server, unit, point or fault",
    409: "Cannot be done now (say, a port taken by another program)",
    415: "Refused: the body is not sent as Content-Type: application/json",
    422: "A field does not validate; the message names it",
    503: "Not ready",
}


def document(routes: list[Route], token_required: bool) -> dict[str, Any]:
    """The OpenAPI document describing `routes`."""
    schemas: dict[str, Any] = {}
    refs = _component_refs(routes, schemas)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "tags": [route.tag],
            "responses": _responses(route, refs, token_required),
        }
        if route.description:
            operation["description"] = route.description
        parameters = _parameters(route.path_model, "path", schemas) + _parameters(
            route.query, "query", schemas
        )
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[route.body, "validation"]}},
            }
        if route.mutating and token_required:
            operation["security"] = [{"bearer": []}]
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modbus-farm control API",
            "version": __version__,
            "description": (
                "Watch and drive a running farm of simulated Modbus TCP devices. Mutating "
                "requests (every method but GET) need a JSON body sent as `Content-Type: "
                "application/json`, no foreign `Origin`, and `Authorization: Bearer TOKEN` "
                "when the farm has a token."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _component_refs(
    routes: list[Route], schemas: dict[str, Any]
) -> dict[tuple[type[BaseModel], JsonSchemaMode], dict[str, Any]]:
    """Schemas of every body and answer model (and ErrorBody) into `schemas`; their $refs."""
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for route in routes:
        if route.body is not None:
            wanted.append((route.body, "validation"))
        if route.response is not None:
            wanted.append((route.response, "serialization"))
    unique = list(dict.fromkeys(wanted))
    refs, definitions = models_json_schema(unique, ref_template=REF)
    schemas.update(definitions.get("$defs", {}))
    return dict(refs)  # type: ignore[arg-type]


def _parameters(
    model: type[BaseModel] | None, where: str, schemas: dict[str, Any]
) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = model.model_json_schema(ref_template=REF)
    schemas.update(schema.get("$defs", {}))  # enums a parameter refers to
    required = set(schema.get("required", ()))
    parameters = []
    for name, field_schema in schema.get("properties", {}).items():
        parameter: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
            "schema": {k: v for k, v in field_schema.items() if k != "description"},
        }
        if "description" in field_schema:
            parameter["description"] = field_schema["description"]
        parameters.append(parameter)
    return parameters


def _responses(
    route: Route,
    refs: dict[tuple[type[BaseModel], JsonSchemaMode], dict[str, Any]],
    token_required: bool,
) -> dict[str, Any]:
    if route.response is not None:
        ok = {"application/json": {"schema": refs[route.response, "serialization"]}}
    elif route.content_type == "application/json":
        ok = {"application/json": {"schema": {"type": "object"}}}
    else:
        ok = {route.content_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {"200": {"description": _STATUS_TEXT[200], "content": ok}}
    statuses = set(route.errors)
    if route.path_model is not None or route.query is not None or route.body is not None:
        statuses |= {400, 422}
    if route.mutating:
        statuses |= {403, 415} | ({401} if token_required else set())
    error = {"application/json": {"schema": refs[ErrorBody, "serialization"]}}
    for status in sorted(statuses):
        responses[str(status)] = {"description": _STATUS_TEXT[status], "content": error}
    return responses


def openapi_route(token_required: bool) -> Route:
    """GET /api/v1/openapi.json: the document of every route on the app that serves it."""

    async def get_openapi(call: Call) -> web.Response:
        return web.json_response(document(served_routes(call.request.app), token_required))

    return Route(
        method="GET",
        path="/api/v1/openapi.json",
        handler=get_openapi,
        summary="This document: every route, generated from the models that validate them",
        tag="meta",
    )
