"""URLs as they may be shown: in logs, error messages and the CLI's output.

Here rather than beside the database or the exporter because both show URLs that may carry a
password (``database.url``, an export's target), and neither should import the other to do so.
"""
from __future__ import annotations

import urllib.parse


def redact_url(url: str) -> str:
    """The URL with any password replaced, fit for logs and error messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
