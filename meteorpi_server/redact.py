"""Secrets out of logs: the values of query parameters that carry one, wherever a URL is logged.
(Client text is escaped wherever it is logged by ``meteorpi_model.logtext``.)

A watch's confirmation link (``GET /watches/<id>/confirm?secret=...``) is a capability: whoever
reads it from an access log can confirm the watch. So are tokens and passwords a client puts in
a query string, on any route. A parameter whose name says it holds a secret keeps its name (an
operator still sees what was asked) and loses its value.
"""
from __future__ import annotations

import re
from urllib.parse import unquote_plus

# Names (case-insensitive, anywhere in the name) whose values are secrets: "secret", "token",
# "password", and their usual kin ("access_token", "passwd", "api_key", "X-Signature", ...).
SECRET_NAME = re.compile(r"secret|token|passw|pwd|api_?key|signature|credential|session", re.IGNORECASE)
REDACTED = "REDACTED"


def redact_query(query: str) -> str:
    """``query`` (a raw query string) with every secret-bearing parameter's value replaced."""
    if not query:
        return query
    out = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        try:
            decoded = unquote_plus(name)
        except Exception:  # a name that will not decode is judged as it was sent
            decoded = name
        out.append(f"{name}={REDACTED}" if eq and (SECRET_NAME.search(decoded) or SECRET_NAME.search(name))
                   else part)
    return "&".join(out)


def redact_uri(uri: str) -> str:
    """``uri`` (a request target or a full URL) with its query's secrets redacted."""
    if not uri or "?" not in uri:
        return uri
    path, _, rest = uri.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    return f"{path}?{redact_query(query)}{hash_mark}{fragment}"
