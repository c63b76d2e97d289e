"""The replication protocol's wire, declared once (docs/protocol.md): what both ends must agree on.

The server's routes (meteorpi_server.import_routes, batch_routes), the exporter's requests
(meteorpi_export.protocol_v1, protocol_v2) and the OpenAPI document (meteorpi_server.openapi)
all read these names, so a path, a state or a limit cannot differ between them. The entities'
own fields are declared in ``entities`` and their wire form derived there.

Paths are relative to an import base URL (``/import`` on a meteorpi server; an export's
``target_url``), written with ``{name}`` placeholders; ``path(...)`` fills them in and
``flask_rule(...)`` turns them into a Flask URL rule.
"""
from __future__ import annotations

import re

# -- versions ------------------------------------------------------------------------------
PROTOCOL_V1 = 1                   # one entity per request: every deployed camera speaks it
PROTOCOL_V2 = 2                   # the fast path: batches, offered by GET {base}/v2

# -- version 1 -----------------------------------------------------------------------------
V1_IMPORT = ""                    # POST {base}: one body of BODY_TYPES
V1_DATA = "/data/{file_id}/{md5}"  # POST: the bytes of one file, multipart/form-data, field "file"
V1_DATA_FIELD = "file"
# The request bodies of POST {base}, by their "type"; the entities' bodies name the entity
# under the same key (``{"type": "event", "event": {...}}``).
BODY_TYPES = ("status", "file", "event", "cached_entity")
CACHED_ENTITY_ID = "cached_entity_id"

# Answer states: every answer is {"state": ..., ...}.
COMPLETE = "complete"
FAILED = "failed"                 # with "message"
NEED_STATUS = "need_status"
NEED_FILE_DATA = "need_file_data"
CONTINUE = "continue"
CONTINUE_NOCACHE = "continue-nocache"
# Version 1's answers other than failed: state -> the id field it carries, if any.
ANSWER_STATES = {COMPLETE: None, NEED_STATUS: "status_id", NEED_FILE_DATA: "file_id",
                 CONTINUE: None, CONTINUE_NOCACHE: None}

# -- version 2 (the fast path) -------------------------------------------------------------
V2_CAPABILITIES = "/v2"           # GET: {"protocol": 2, "max_entities", "max_upload_bytes", "max_body_bytes"}
V2_CHECK = "/v2/check"            # POST JSON: which of these ids the target lacks
V2_DATA = "/v2/data"              # POST FILES_MEDIA_TYPE: a manifest line, then the files' bytes
V2_IMPORT = "/v2/import"          # POST JSON: statuses, events and files; one result per entity
# The body of V2_DATA: one JSON line {"files": [{"file_id", "md5", "size"[, "offset"]}]}, then
# each file's bytes (from its offset) back to back, in the manifest's order.
FILES_MEDIA_TYPE = "application/vnd.meteorpi.files"
# Keys of a check and its answer; the answer also has REFUSED_FILE_DATA and OFFSETS.
CHECK_KEYS = ("statuses", "events", "files", "file_data")
REFUSED_FILE_DATA = "refused_file_data"
OFFSETS = "offsets"
# Each item of a check's file_data.
FILE_DATA_KEYS = ("file_id", "md5")
# The entities of a V2_IMPORT body, by key.
IMPORT_KEYS = ("statuses", "events", "files")
# A V2_DATA manifest line, and each of its files (offset: where a continued upload's bytes start).
MANIFEST_KEYS = ("files",)
MANIFEST_FILE_KEYS = ("file_id", "md5", "size", "offset")

# -- limits --------------------------------------------------------------------------------
MAX_ENTITIES = 1000               # ids or entities per check or import request
MAX_FILES_PER_UPLOAD = 10000      # files per V2_DATA manifest (and file_data per check)
MAX_MANIFEST_LINE = 4 * 1024 * 1024  # bytes of the manifest line, newline included

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def path(base: str, route: str, **params: str) -> str:
    """``base`` (an import URL, trailing slash or not) joined with ``route``, placeholders filled."""
    return base.rstrip("/") + route.format(**params)


def flask_rule(url_path: str, route: str) -> str:
    """The Flask URL rule of ``route`` under ``url_path`` (``{file_id}`` -> ``<file_id>``)."""
    return url_path.rstrip("/") + _PLACEHOLDER.sub(r"<\1>", route) if route else url_path
