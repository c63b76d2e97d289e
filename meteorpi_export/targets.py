"""Remote URLs this node sends credentials to (an export's target, ``meteorpi feed --url``),
judged exactly as the HTTP client that sends to them will read them.

Why here and why requests' own parser: a check that parses a URL one way while requests and
urllib3 parse it another can be steered. ``http://evil.example\\@127.0.0.1/import`` reads as
host 127.0.0.1 to ``urllib.parse`` but is sent to evil.example by requests, so a check by the
former let a password go in clear to a public host. Here the host is the one
``requests.PreparedRequest.prepare_url`` leaves in the URL it will send, and a URL that the two
parsers read differently, or whose reading depends on such details (a backslash, user-info
before an ``@``, control characters), is refused outright: nobody needs one, so none is worth
guessing about. Messages are one line and show the URL only through ``redact_url``.
"""
from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass

import requests
from urllib3.util import parse_url

from meteorpi_model.admin import public_host
from meteorpi_model.urls import redact_url

from .errors import ExportError


class BadTarget(ExportError):
    """A remote URL that cannot be used as given; the message is one line naming why.

    ``target`` is the URL as read when its host was certain and a later rule refused it
    (user-info, a query): None when which host it names is not certain."""

    def __init__(self, message: str, target: "Target | None" = None):
        super().__init__(message)
        self.target = target


@dataclass(frozen=True)
class Target:
    """A checked remote URL: ``url`` as given; ``scheme``, ``host`` and ``port`` as requests sends it."""
    url: str
    scheme: str
    host: str
    port: int | None

    @property
    def plain_http_to_public(self) -> bool:
        """Whether credentials sent here would cross networks nobody vouches for in clear."""
        return self.scheme == "http" and public_host(self.host)


def parse_target(url: str, what: str = "the target", *, allow_plain_http_to_public: bool = True) -> Target:
    """``url`` checked as an http(s) base URL the node may send credentials to; BadTarget otherwise.

    ``what`` names the URL in messages (``--url``, ``--target``). Without
    ``allow_plain_http_to_public`` (the user's ``--insecure-http``), plain HTTP to a public host
    is refused too, as soon as the host is known for certain: before the rules that follow
    (user-info, query), so such a URL is refused for what matters most."""
    shown = redact_url(url)
    bad = next((c for c in url if not "!" <= c <= "~"), None)
    if bad is not None:
        raise BadTarget(f"{what} {ascii(shown)} contains {_describe(bad)}: give the URL as printable "
                        f"ASCII without spaces (percent-encode what must be in it)")
    if "\\" in url:
        raise BadTarget(f"{what} {shown} contains a backslash, which HTTP clients read differently "
                        f"(one sends to the host before it, another to the host after an '@'): remove it")
    scheme = url.partition(":")[0].lower()
    if scheme not in ("http", "https") or not url[len(scheme):].startswith("://"):
        raise BadTarget(f"{what} {shown} is not an http:// or https:// URL")
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
        sent = parse_url(prepared.url)
    except (requests.RequestException, ValueError, UnicodeError, LookupError):
        # Their messages repeat the URL, credentials and all: ours names the part instead.
        raise BadTarget(f"{what} {shown} is not a valid URL: {_why_unparsable(url)}") from None
    split = urllib.parse.urlsplit(url)
    host = (sent.host or "").lower()
    if not host:
        raise BadTarget(f"{what} {shown} names no host")
    try:
        port = split.port
    except ValueError:
        port = -1
    if sent.port == 0 or port == 0 or sent.port != port:
        raise BadTarget(f"{what} {shown} has a port that is not a number from 1 to 65535")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare != urllib.parse.unquote(split.hostname or "").lower():  # fe80::1%25eth0: a zone id
        raise BadTarget(f"{what} {shown} reads as host {bare!r} to the HTTP client but "
                        f"{split.hostname!r} to other parsers: write it unambiguously")
    target = Target(url=url, scheme=sent.scheme.lower(), host=bare, port=sent.port)
    if target.plain_http_to_public and not allow_plain_http_to_public:
        raise BadTarget(plain_http_refusal(target, what), target)
    if sent.auth or "@" in split.netloc:
        raise BadTarget(f"{what} {shown} carries user-info before an '@': give the user with --user and "
                        f"the password on stdin, never in the URL", target)
    if split.query or split.fragment or "?" in url or "#" in url:
        raise BadTarget(f"{what} {shown} has a ?query or #fragment: paths are added after it, "
                        f"so give the base URL alone", target)
    return target


def plain_http_refusal(target: Target, what: str = "the target") -> str:
    """The one-line refusal of sending a password in clear to ``target``."""
    return (f"{what} {redact_url(target.url)} is plain HTTP to a host that is not loopback or a private "
            f"address (a host name other than localhost counts as public), so the password would travel "
            f"in clear: use https://, or give --insecure-http to accept that")


def _describe(char: str) -> str:
    if char == " ":
        return "a space"
    if char.isspace() or not char.isprintable():
        return f"a control character ({ascii(char)[1:-1]})"
    return f"a non-ASCII character ({ascii(char)[1:-1]})"


def _why_unparsable(url: str) -> str:
    """Which part of an unparsable URL is wrong, without repeating the URL."""
    try:
        split = urllib.parse.urlsplit(url)
    except ValueError as e:  # "Invalid IPv6 URL"
        return f"{e} (an IPv6 address goes in brackets, e.g. http://[::1]:8080/import)"
    if not split.netloc:
        return "no host"
    try:
        split.port
    except ValueError:
        return "its port is not a number from 1 to 65535"
    host = split.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"the host {ascii(host)} is not a valid host name or IP address"
    return "its host or port cannot be read"
