"""URLs as they may be shown: in logs, error messages and the CLI's output.

Here rather than beside the database or the exporter because both show URLs that may carry a
password (``database.url``, an export's target), and neither should import the other to do so.
"""
from __future__ import annotations

import re
import urllib.parse

# user:password@ after the scheme, for URLs urlsplit refuses (``http://u:p@[::1/x``): those are
# shown in the very messages that say they are wrong, so they must be redacted too.
_USERINFO = re.compile(r"(?P<head>//[^/?#@:]*:)[^/?#]*@")


def redact_url(url: str) -> str:
    """The URL with any password replaced (``u:***@``), fit for logs and error messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:  # unparsable: redact by pattern, never show it raw
        return _USERINFO.sub(r"\g<head>***@", url, count=1)
    if password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
