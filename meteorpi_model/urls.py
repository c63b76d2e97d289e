"""URLs as they may be shown: in logs, error messages and the CLI's output.

Here rather than beside the database or the exporter because both show URLs that may carry a
password (``database.url``, an export's target), and neither should import the other to do so.
"""
from __future__ import annotations

import re
import urllib.parse

# The password of a URL ``urlsplit`` refuses (``postgresql://u:pw@[::1``) or misreads (a '/' in
# it ends the host part): from the userinfo's first ':' to the next '@'.
_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:@/]*:)[^@]*?@")
# libpq's key=value form: password=secret, password = 'a b c'.
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)")


def redact_url(url: str) -> str:
    """The URL with any password replaced, fit for logs and error messages. Never raises: a
    malformed URL is exactly the kind an error message shows, and it may hold a password too."""
    url = _KEYWORD_PASSWORD.sub(r"\1***", url)
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return _USERINFO_PASSWORD.sub(r"\1***@", url)
    if password is None:
        return _USERINFO_PASSWORD.sub(r"\1***@", url)
    netloc = parts.netloc.replace(f":{password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
