"""The HTTP API's OpenAPI document, generated from its routes and the types of what they take and
answer (a job spec's schema is the one `fedctl schema export` writes)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from federation.http.routes import ROUTES, Route
from federation.spec.job import JobSpec

REF = "#/components/schemas/{model}"
ERRORS = {"400": "the request or its spec is wrong (the message names the field)",
          "403": "the caller may not do this", "404": "no such job or site (or another tenant's)",
          "409": "not in a state that allows it", "422": "no site could ever run it",
          "429": "a rate or backlog limit; retry later", "503": "the federation takes no submissions now"}


@dataclass(frozen=True)
class Error:
    code: str       # INVALID_SPEC, PERMISSION_DENIED, NOT_FOUND, ... as the gRPC API's error codes
    message: str    # one line: what is wrong and where


def document() -> dict[str, Any]:
    inputs: list[tuple[str, Any, TypeAdapter]] = [(r.rpc, "serialization", TypeAdapter(r.returns)) for r in ROUTES]
    inputs += [("Error", "serialization", TypeAdapter(Error)), ("JobSpec", "validation", TypeAdapter(JobSpec))]
    made, defs = TypeAdapter.json_schemas(inputs, ref_template=REF)
    schemas = {key: schema for (key, _), schema in made.items()}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas[route.rpc],
                                                                             schemas["JobSpec"])
    paths["/v1/jobs/{id}/logs"] = {"get": {
        "operationId": "GetJobLogs", "summary": "A job's log from a byte offset, as text",
        "parameters": [_path("id"), _query("offset", "bytes already read (X-Log-Offset of the answer before)",
                                           "integer")],
        "responses": {"200": {"description": "the log's bytes from the offset", "headers": {
            "X-Log-Offset": {"schema": {"type": "integer"}, "description": "the offset to read on from"}},
            "content": {"text/plain": {"schema": {"type": "string"}}}}, **_errors()}}}
    return {"openapi": "3.1.0",
            "info": {"title": "fedctl federation", "version": "v1",
                     "description": "The gRPC API's calls over HTTPS. Callers present a client certificate from "
                                    "the federation's CA; what each may do is what its role allows over gRPC."},
            "security": [{"mutualTLS": []}],
            "paths": paths,
            "components": {"schemas": {**defs.get("$defs", {})},
                           "securitySchemes": {"mutualTLS": {"type": "mutualTLS"}}}}


def _operation(route: Route, answer: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": route.rpc, "summary": route.summary,
                          "parameters": [_path(n) for n in re.findall(r"{(\w+)}", route.path)] +
                          [_query(q.name, q.what, q.kind, q.many) for q in route.query],
                          "responses": {"201" if route.body else "200": {
                              "description": "done", "content": {"application/json": {"schema": answer}}},
                              **_errors()}}
    if route.body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": spec}}}
    return op


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, what: str, kind: str = "string", many: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": {"type": kind}} if many else {"type": kind}
    return {"name": name, "in": "query", "required": False, "description": what, "schema": schema,
            **({"style": "form", "explode": True} if many else {})}


def _errors() -> dict[str, Any]:
    return {status: {"description": what, "content": {"application/json": {"schema": {"$ref": REF.format(
        model="Error")}}}} for status, what in ERRORS.items()}
