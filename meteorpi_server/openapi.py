"""The OpenAPI 3.1 document of the HTTP API (``GET /openapi.json``), derived, never hand-written.

Nothing here restates a field of an entity or a search:

* request bodies of ``/import`` are a ``oneOf`` of the four body kinds of docs/protocol.md, each
  pointing into ``components.schemas``, which *is* ``meteorpi_model.wire_schema()``'s ``$defs``
  (the JSON Schema derived from every codec's declared bounds);
* the read API's query parameters are ``fields(EventSearch)`` / ``fields(FileRecordSearch)``,
  one parameter per field, shaped by the same rules ``meteorpi_model.query`` parses them with
  (plain lists repeat the parameter, structured values are JSON);
* path parameters carry the schema of the codec the route decodes them with.

What is written here is only what the model cannot know: the schemas of the protocol's
answers and which status codes each route may give; the routes, body types, answer states and
limits are the wire's (``meteorpi_model.wire``). A bound changed in a codec shows up in the
document at once (tests/reliability/test_openapi.py proves it by changing one).
"""
from __future__ import annotations

import copy
import functools
from typing import Any

from meteorpi_model import WIRE_ENTITIES, EventSearch, FileRecordSearch, fields, wire, wire_schema
from meteorpi_model.entities import CAMERA_ID
from meteorpi_model.fields import MD5, Codec, Instant, UUIDCodec
from meteorpi_model.query import is_plain_list, is_structured
from meteorpi_model.wire import ANSWER_STATES, BODY_TYPES, FILES_MEDIA_TYPE, MAX_ENTITIES, MAX_FILES_PER_UPLOAD

from .jsonp import MAX_CALLBACK_LENGTH

OPENAPI_VERSION = "3.1.0"
SCHEMAS = "#/components/schemas/"
# JSONP callback names (jsonp.py's rule, spelled with ASCII classes so generators stay ASCII).
CALLBACK_PATTERN = r"^[A-Za-z_$][A-Za-z0-9_$]*(\.[A-Za-z_$][A-Za-z0-9_$]*)*$"
BASIC = "basicAuth"

def _rewrite_refs(node: Any) -> Any:
    """``#/$defs/X`` (JSON Schema) -> ``#/components/schemas/X`` (OpenAPI), everywhere."""
    if isinstance(node, dict):
        return {k: (SCHEMAS + v[len("#/$defs/"):] if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/")
                    else _rewrite_refs(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def _ref(name: str) -> dict:
    return {"$ref": SCHEMAS + name}


def _object(properties: dict, required: list[str] | None = None, description: str | None = None) -> dict:
    out = {"type": "object", "properties": properties, "required": required or list(properties)}
    if description:
        out["description"] = description
    return out


def _codec_schema(codec: Codec) -> dict:
    """A codec's JSON Schema with its nested entities referenced from components."""
    return _rewrite_refs(codec.schema({}))


def _body_schemas() -> dict:
    """One schema per body kind of ``POST /import`` (names ``<Kind>Body``)."""
    out = {}
    for kind in BODY_TYPES:
        if kind == "cached_entity":
            props = {"type": {"const": kind}, "cached_entity_id": _codec_schema(UUIDCodec())}
            description = "the entity sent before, by id only"
        else:
            props = {"type": {"const": kind}, kind: _ref(WIRE_ENTITIES[kind].__name__)}
            description = f"a full {kind}"
        out[_body_name(kind)] = _object(props, description=description)
    return out


def _body_name(kind: str) -> str:
    return "".join(part.capitalize() for part in kind.split("_")) + "Body"


def _answer_schemas() -> dict:
    uuid_schema = _codec_schema(UUIDCodec())
    answers = {}
    for state, id_field in ANSWER_STATES.items():
        props = {"state": {"const": state}}
        if id_field:
            props[id_field] = uuid_schema
        answers[_answer_name(state)] = _object(props)
    answers["Failed"] = _object({"state": {"const": wire.FAILED}, "message": {"type": "string"}},
                                description="every refusal and error: the message names the field and the problem")
    answers["ImportAnswer"] = {"oneOf": [_ref(_answer_name(s)) for s in ANSWER_STATES] + [_ref("Failed")]}
    answers["DataAnswer"] = {"oneOf": [_ref(_answer_name("continue")), _ref("Failed")]}
    return answers


def _answer_name(state: str) -> str:
    return "".join(part.capitalize() for part in state.replace("-", "_").split("_")) + "Answer"


def search_parameters(cls: type) -> list[dict]:
    """The query parameters of a search class: one per declared field (meteorpi_model.query)."""
    params = []
    for f in fields(cls):
        param: dict[str, Any] = {"name": f.name, "in": "query", "required": False}
        if f.doc:
            param["description"] = f.doc
        if is_structured(f.codec):
            param["content"] = {"application/json": {"schema": _codec_schema(f.codec)}}
        else:
            param["schema"] = _codec_schema(f.codec)
            if is_plain_list(f.codec):
                param.update(style="form", explode=True)
        params.append(param)
    return params


def _path_param(name: str, codec: Codec, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": _codec_schema(codec)}


CALLBACK_PARAMETER = {"name": "callback", "in": "query", "required": False,
                      "description": "JSONP: pad the answer as a call of this JavaScript name",
                      "schema": {"type": "string", "minLength": 1, "maxLength": MAX_CALLBACK_LENGTH,
                                 "pattern": CALLBACK_PATTERN}}


def _json(schema: dict, description: str, jsonp: bool = False) -> dict:
    content = {"application/json": {"schema": schema}}
    if jsonp:
        content["application/javascript"] = {"schema": {"type": "string"}}
    return {"description": description, "content": content}


def _failures(*codes: int, jsonp: bool = False) -> dict:
    what = {400: "bad input: the message names the field", 401: "no or wrong credentials",
            403: "the user lacks the role", 404: "not held here",
            409: "the name is taken (a watch test: the watch is not confirmed yet)",
            413: "body or upload over the limit",
            429: "an e-mail watch's confirmation link cannot be mailed now: one waits for the address "
                 "already, or as many as allowed wait; the message says which",
            503: "the database is unreachable: retry after Retry-After seconds",
            507: "the archive's disk refused to store the bytes: retry after Retry-After seconds"}
    out = {}
    for code in codes:
        if code == 414:  # refused by the serving worker before the route runs: JSON, never JSONP
            out["414"] = _json(_ref("Failed"), "request line over 4094 bytes: the URL is too long")
            continue
        response = _json(_ref("Failed"), what[code], jsonp)
        if code == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        if code in (503, 507):
            response["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}
        out[str(code)] = response
    return out


def _import_paths(base: str, security: list) -> dict:
    body_ref = {"oneOf": [_ref(_body_name(kind)) for kind in BODY_TYPES]}
    upload = _object({wire.V1_DATA_FIELD: {"type": "string", "format": "binary",
                               "contentMediaType": "application/octet-stream"}})
    return {
        wire.path(base, wire.V1_IMPORT): {"post": {
            "operationId": "import" + base.replace("/", "_"),
            "summary": "Deliver an entity (docs/protocol.md version 1)",
            "security": security,
            "requestBody": {"required": True, "content": {"application/json": {"schema": body_ref}}},
            "responses": {"200": _json(_ref("ImportAnswer"), "what the exporter should do next"),
                          **_failures(400, 401, 403, 413, 414, 503)}}},
        wire.path(base, wire.V1_DATA, file_id="{file_id}", md5="{md5}"): {"post": {
            "operationId": "import_data" + base.replace("/", "_"),
            "summary": "Upload the bytes of a file the server asked for",
            "security": security,
            "parameters": [_path_param("file_id", UUIDCodec(), "the file's id"),
                           _path_param("md5", MD5(), "MD5 of the bytes, as the exporter computed it")],
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": upload}}},
            "responses": {"200": _json(_ref("DataAnswer"), "continue: stored and verified (or already held)"),
                          **_failures(400, 401, 403, 413, 414, 503, 507)}}},
    }


def _ids(max_items: int = MAX_ENTITIES) -> dict:
    return {"type": "array", "items": _codec_schema(UUIDCodec()), "maxItems": max_items}


def _batch_paths(base: str, security: list) -> dict:
    """Protocol version 2 (batch_routes.py): the same entities, many per request."""
    suffix = base.replace("/", "_")
    file_data = {"type": "array", "maxItems": MAX_FILES_PER_UPLOAD,
                 "items": _object({"file_id": _codec_schema(UUIDCodec()), "md5": _codec_schema(MD5())})}
    refusal = {"type": "array", "items": _object({"file_id": _codec_schema(UUIDCodec()), "message": {"type": "string"}})}
    check = _object({"statuses": _ids(), "events": _ids(), "files": _ids(), "file_data": file_data}, required=[])
    lacking = _object({"statuses": _ids(), "events": _ids(), "files": _ids(),
                       "file_data": _ids(MAX_FILES_PER_UPLOAD), "refused_file_data": refusal})
    batch = _object({kind + ("es" if kind == "status" else "s"): {"type": "array", "maxItems": MAX_ENTITIES,
                                                                  "items": _ref(cls.__name__)}
                     for kind, cls in WIRE_ENTITIES.items()}, required=[])
    result = {"oneOf": [_object({"id": _codec_schema(UUIDCodec()), "state": {"const": wire.COMPLETE}}),
                        _object({"id": _codec_schema(UUIDCodec()), "state": {"const": wire.FAILED},
                                 "message": {"type": "string"}})]}

    def post(operation: str, summary: str, content: dict, ok: dict, *more_codes: int) -> dict:
        codes = (400, 401, 403, 404, 413, 414, 503, *more_codes)
        return {"post": {"operationId": f"{operation}{suffix}", "summary": summary, "security": security,
                         "requestBody": {"required": True, "content": content},
                         "responses": {"200": _json(ok, "done"), **_failures(*codes)}}}
    return {
        wire.path(base, wire.V2_CAPABILITIES): {"get": {"operationId": f"v2_capabilities{suffix}", "summary": "Whether and how the fast path is offered",
                     "security": security, "responses": {
                         "200": _json(_object({"protocol": {"const": wire.PROTOCOL_V2},
                                               "max_entities": {"type": "integer"},
                                               "max_upload_bytes": {"type": "integer"},
                                               "max_body_bytes": {"type": "integer"}}), "the limits of a batch"),
                         **_failures(401, 403, 404, 503)}}},
        wire.path(base, wire.V2_CHECK): post("v2_check", "Which of these ids the server lacks",
                            {"application/json": {"schema": check}}, lacking),
        wire.path(base, wire.V2_DATA): post("v2_data", "Bytes of many files: a JSON manifest line, then the bytes back to back",
                           {FILES_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
                           _object({"stored": _ids(MAX_FILES_PER_UPLOAD), "failed": refusal}), 507),
        wire.path(base, wire.V2_IMPORT): post("v2_import", "Import many statuses, events and files in one transaction",
                             {"application/json": {"schema": batch}}, _object({"results": {
                                 "type": "array", "maxItems": MAX_ENTITIES, "items": result,
                                 "description": "one entry for each id sent (each once, however often sent): "
                                                "every status, event and file record, refused or not"}})),
    }


def _get(operation_id: str, summary: str, ok: dict, security: list, parameters: list | None = None,
         not_found: bool = False, jsonp: bool = True) -> dict:
    codes = (400, 401, 403, 404, 414, 503) if not_found else (400, 401, 403, 414, 503)
    op = {"operationId": operation_id, "summary": summary, "security": security,
          "parameters": (parameters or []) + ([CALLBACK_PARAMETER] if jsonp else []),
          "responses": {"200": ok if not jsonp else _json(ok["content"]["application/json"]["schema"],
                                                          ok["description"], jsonp=True),
                        **_failures(*codes, jsonp=jsonp)}}
    return {"get": op}


def _read_paths(security: list, jsonp: bool) -> dict:
    """The read API; ``jsonp``: whether GET answers may be padded (only with public reads)."""
    get = functools.partial(_get, jsonp=jsonp)
    event_id = _path_param("event_id", UUIDCodec(), "the event's id")
    file_id = _path_param("file_id", UUIDCodec(), "the file's id")
    time = {"name": "time", "in": "query", "required": False, "description": "the status in force at this "
            "instant (default: now)", "schema": _codec_schema(Instant())}
    return {
        "/cameras": get("cameras", "Every camera with a status", _json(
            _object({"cameras": {"type": "array", "items": _codec_schema(CAMERA_ID)}}), "camera ids"), security),
        "/cameras/{camera_id}/status": get("camera_status", "A camera's status at a time", _json(
            _object({"status": _ref("CameraStatus")}), "the status"), security,
            [_path_param("camera_id", CAMERA_ID, "the camera"), time], not_found=True),
        "/events": get("events", "Search events", _json(
            _object({"count": {"type": "integer", "minimum": 0},
                     "events": {"type": "array", "items": _ref("Event")}}), "matching events, a page"),
            security, search_parameters(EventSearch)),
        "/files": get("files", "Search files", _json(
            _object({"count": {"type": "integer", "minimum": 0},
                     "files": {"type": "array", "items": _ref("FileRecord")}}), "matching files, a page"),
            security, search_parameters(FileRecordSearch)),
        "/events/{event_id}": get("event", "One event", _json(_object({"event": _ref("Event")}), "the event"),
                                  security, [event_id], not_found=True),
        "/files/{file_id}": get("file", "One file record", _json(_object({"file": _ref("FileRecord")}),
                                                                 "the file record"),
                                security, [file_id], not_found=True),
        "/files/{file_id}/data": get("file_data", "The file's bytes, as an attachment", {
            "description": "the bytes, with the record's MIME type unless a browser would run or render it "
                           "(scripts, HTML, XML, SVG, CSS, WebAssembly, PDF): those come as application/octet-stream",
            "content": {"*/*": {"schema": {}}}},
            security, [file_id], not_found=True, jsonp=False),
    }


from meteorpi_db.feed import KINDS as FEED_KINDS  # noqa: E402  (the feed's kinds, declared once)


def _feed_paths(security: list, max_wait: int, jsonp: bool) -> dict:
    """The live feed: the same parameters on both routes (``wait`` on the long-poll only)."""
    def query(name: str, schema: dict, description: str, many: bool = False) -> dict:
        if many:
            schema = {"type": "array", "items": schema}
        return {"name": name, "in": "query", "required": False, "description": description, "schema": schema,
                **({"style": "form", "explode": True} if many else {})}
    cursor = {"type": "string", "pattern": r"^[0-9]{1,18}-[0-9]{1,18}$"}
    common = [query("after", cursor, "resume just after this cursor (default: from now; 0-0: all kept)"),
              query("camera", _codec_schema(CAMERA_ID), "only these cameras", many=True),
              query("event_type", {"type": "string", "minLength": 1}, "only these types (* wildcards)", many=True),
              query("kind", {"enum": list(FEED_KINDS)}, "only these kinds", many=True),
              query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "items per answer at most")]
    item = _object({"cursor": cursor, "kind": {"type": "string"}, "op": {"type": "string"},
                    "id": {"type": "string"}, "camera_id": {"type": "string"}, "event_type": {"type": "string"},
                    "time": {"type": "integer"}, "summary": {"type": "object"},
                    "logged_at": {"type": "integer", "description": "ms: when the change was written, "
                                                                     "inside its transaction"},
                    "committed_at": {"type": ["integer", "null"],
                                     "description": "ms: when its transaction committed; null when the "
                                                    "database does not track commit times"}},
                   ["cursor", "kind", "op", "id", "camera_id", "summary", "logged_at", "committed_at"])
    page = {"oneOf": [_object({"items": {"type": "array", "items": item}, "cursor": cursor,
                               "up_to_date": {"type": "boolean"}}, ["items", "cursor", "up_to_date"]),
                      _object({"must_refetch": {"const": True}, "cursor": cursor,
                               "message": {"type": "string", "description": "why: the cursor is older than "
                                           "the feed keeps, or ahead of its newest item"}},
                              ["must_refetch", "cursor", "message"])]}
    wait = query("wait", {"type": "number", "minimum": 0, "maximum": max_wait},
                 "seconds to wait for something new (default 0)")
    stream = _get("feed_stream", "The live feed as Server-Sent Events", {
        "description": "an event stream: the backlog, `up-to-date`, then items as they commit",
        "content": {"text/event-stream": {"schema": {"type": "string"}}}}, security, common, jsonp=False)
    return {"/feed": _get("feed", "The live feed, long-polled", _json(page, "items after the cursor"), security,
                          common + [wait], jsonp=jsonp),
            "/feed/stream": stream}


def _watch_paths(security: list, read_security: list, jsonp: bool) -> dict:
    """Watches (meteorpi_model.watch.Watch is the body) and coincidence groups."""
    from meteorpi_model.fields import Int
    watch_id = _path_param("watch_id", UUIDCodec(), "the watch's id")
    group_id = _path_param("group_id", UUIDCodec(), "the group's id (a merged one gives the group it joined)")
    one = _json(_object({"watch": _ref("Watch")}), "the watch")
    created = _json(_object({"watch": _ref("Watch"), "secret": {"type": "string", "pattern": "^whsec_"},
                             "confirmation": {"type": "string"}}, ["watch"]),
                    "the watch; a webhook's signing secret, shown this once; for an e-mail watch, where its "
                    "confirmation link went (nothing else is sent until it is opened)")
    query = [{"name": name, "in": "query", "required": False, "description": text, "schema": _codec_schema(codec)}
             for name, codec, text in (("after", Instant(), "groups that began at or after this instant"),
                                       ("before", Instant(), "groups that began before this instant"),
                                       ("camera", CAMERA_ID, "groups this camera is in"),
                                       ("limit", Int(1, 1000), "at most this many (default 100)"),
                                       ("skip", Int(0, 10 ** 9), "skip this many first"))]
    groups = {"type": "array", "items": {"type": "object"}}
    return {
        "/watches": {
            "post": {"operationId": "add_watch", "summary": "Add a watch of your own", "security": read_security,
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Watch")}}},
                     "responses": {"201": created, **_failures(400, 401, 403, 409, 413, 414, 429, 503)}},
            "get": {"operationId": "watches", "summary": "Your watches (camera_admin: every watch)",
                    "security": security, "responses": {
                        "200": _json(_object({"watches": {"type": "array", "items": _ref("Watch")}}), "watches"),
                        **_failures(401, 414, 503)}}},
        "/watches/{watch_id}": {
            "get": {"operationId": "watch", "summary": "One of your watches", "security": security,
                    "parameters": [watch_id], "responses": {"200": one, **_failures(400, 401, 404, 414, 503)}},
            "delete": {"operationId": "delete_watch", "summary": "Delete one of your watches", "security": security,
                       "parameters": [watch_id], "responses": {
                           "200": _json(_object({"deleted": {"type": "string"}}), "deleted"),
                           **_failures(400, 401, 404, 414, 503)}}},
        "/watches/{watch_id}/test": {
            "post": {"operationId": "test_watch", "summary": "Queue a test notification", "security": security,
                     "parameters": [watch_id], "responses": {
                         "202": _json(_object({"delivery_id": {"type": "integer"}}), "queued"),
                         **_failures(400, 401, 404, 409, 414, 503)}}},
        "/watches/{watch_id}/confirm": {
            "get": {"operationId": "confirm_watch", "summary": "Confirm an e-mail watch (the mailed link)",
                    "security": [], "parameters": [watch_id, {"name": "secret", "in": "query", "required": True,
                                                             "schema": {"type": "string", "maxLength": 200}}],
                    "responses": {"200": _json(_object({"confirmed": {"type": "string"}}), "confirmed"),
                                  **_failures(404, 414, 503)}}},
        "/coincidences": _get("coincidences", "Coincidence groups, newest first", _json(
            _object({"count": {"type": "integer", "minimum": 0}, "coincidences": groups}), "groups, a page"),
            read_security, query, jsonp=jsonp),
        "/coincidences/{group_id}": _get("coincidence", "One coincidence group", _json(
            _object({"coincidence": {"type": "object"}}), "the group"), read_security, [group_id], not_found=True,
            jsonp=jsonp),
    }


def _watch_schemas() -> dict:
    from meteorpi_model import json_schema
    from meteorpi_model.watch import Watch
    defs: dict = {}
    json_schema(Watch, defs)
    return _rewrite_refs(defs)


def openapi_document(import_paths: list[str] | None = None, public_read: bool = False,
                     version: str = "unknown", max_feed_wait: int = 60) -> dict:
    """The whole document: import routes under each of ``import_paths``, the read API, the index."""
    components = _rewrite_refs(copy.deepcopy(wire_schema()["$defs"]))
    components.update(_body_schemas())
    components.update(_answer_schemas())
    components.update(_watch_schemas())
    basic = [{BASIC: []}]
    read_security = [{BASIC: []}, {}] if public_read else basic
    paths: dict = {
        "/": {"get": {"operationId": "index", "summary": "Name and version of the service", "security": [],
                      "responses": {"200": _json(_object({"service": {"type": "string"},
                                                          "version": {"type": "string"},
                                                          "protocol": {"type": "integer"}}), "the service")}}},
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "security": [],
                                  "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}},
    }
    for base in import_paths or ["/import"]:
        paths.update(_import_paths(base, basic))
        paths.update(_batch_paths(base, basic))
    paths.update(_read_paths(read_security, jsonp=public_read))
    paths.update(_feed_paths(read_security, max_feed_wait, jsonp=public_read))
    paths.update(_watch_paths(basic, read_security, jsonp=public_read))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "meteorpi import service and read API", "version": version,
                 "description": "Camera nodes deliver statuses, files and events (docs/protocol.md, version 1); "
                                "users read what was imported. Schemas are derived from the model's field "
                                "declarations."},
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {BASIC: {"type": "http", "scheme": "basic"}}},
    }
