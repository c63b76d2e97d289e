"""Requests to addresses users choose (webhooks): which addresses they may reach, and a
requests session that holds every connection to that.

A webhook URL is the user's choice, the request is the server's: without a rule it would let
anyone make the server POST to its own loopback, its LAN or a cloud metadata service. The rule
is one function, ``address_refusal``, applied to every address a name resolves to, both when a
watch is added (``notify.check_target``, for an early answer) and where each delivery connects
(``webhook_session``), on the very addresses the socket is connected to, so that no second DNS
answer can differ from the one judged.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import sys

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family, create_connection

from meteorpi_export.transport import pools_with
from meteorpi_model import MeteorpiError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 ranges whose low 32 bits are an IPv4 address the packet ends up at (or is carried by).
# ipaddress calls most of them global, so each embedded address is judged by the IPv4 rule.
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")          # RFC 4291 (deprecated); a stack may route it as IPv4
IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 SIIT
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")    # RFC 6052: a NAT64 gateway forwards to the IPv4
# RFC 8215 local-use NAT64 prefix: the operator chooses the prefix length inside it, so where
# (and whether) an IPv4 address is embedded cannot be known here. IANA lists it as not globally
# reachable; refused outright (a deployment that needs it sets notify.allow_private_targets).
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")


class TargetRefused(MeteorpiError):
    """A webhook URL that resolves to an address we do not send to (loopback, private, ...)."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, where the network would take a packet to or
    through them: IPv4-mapped and -compatible, SIIT, NAT64 (well-known prefix), 6to4 (the relay)
    and Teredo (server and client)."""
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in IPV4_COMPATIBLE or address in IPV4_TRANSLATED or address in NAT64_WELL_KNOWN:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def _public(address: IPAddress) -> bool:
    return address.is_global and not address.is_multicast


def address_refusal(address: IPAddress) -> str | None:
    """Why a webhook may not reach ``address``, or None if it may.

    Refused: whatever is not global (loopback, private, link-local, CGNAT, documentation,
    reserved), multicast, the local-use NAT64 prefix, and any IPv6 address whose embedded IPv4
    address (``embedded_ipv4``) would be refused. Embedding forms are judged rather than refused
    whole because on an IPv6-only host DNS64 answers every IPv4-only name with a 64:ff9b::/96
    address: refusing that prefix would refuse every such webhook, however public.
    """
    if not _public(address):
        return f"a non-public address ({address})"
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address in NAT64_LOCAL_USE:
        return f"a local-use NAT64 address ({address}), whose embedded IPv4 address cannot be located"
    for inner in embedded_ipv4(address):
        if not _public(inner):
            return f"a non-public address ({address} carries {inner})"
    return None


MAX_HOST_NAME = 253  # characters of a name, as written in ASCII (IDNA), without the root's dot
MAX_LABEL = 63
# The dots IDNA separates labels at (Python's idna codec, which getaddrinfo applies, too).
_IDNA_DOTS = re.compile("[.\u3002\uff0e\uff61]")


def host_name_refusal(host: str) -> str | None:
    """Why ``host`` is no name a resolver can be asked for, or None.

    getaddrinfo encodes a name with Python's idna codec first, which refuses an empty label or
    one over 63 characters with UnicodeError; under gevent that happens in its threadpool,
    which prints the traceback to the server's log on every such request. So the form is
    judged here, before anything resolves: labels of 1-63 characters, IDNA-encodable, at most
    253 characters in all (one final dot, the root's, is allowed). Address literals pass."""
    name = host[:-1] if host.endswith(".") else host
    labels = _IDNA_DOTS.split(name)
    if any(not label for label in labels):
        return "it has an empty label (two dots together, or a dot first)"
    if any(len(label) > MAX_LABEL for label in labels if label.isascii()):
        return f"it has a label longer than {MAX_LABEL} characters"
    try:
        encoded = name.encode("idna")
    except UnicodeError as e:
        return f"it cannot be written in IDNA ({e})"
    if len(encoded) > MAX_HOST_NAME:
        return f"it is longer than {MAX_HOST_NAME} characters"
    return None


def check_host_name(host: str) -> None:
    """TargetRefused naming ``host`` when ``host_name_refusal`` refuses it."""
    reason = host_name_refusal(host)
    if reason:
        raise TargetRefused(f"webhook: {host!r} is not a host name: {reason}")


def resolve_checked(host: str, port: int, family: int = socket.AF_UNSPEC) -> list[tuple]:
    """Resolve ``host`` once and judge every address: getaddrinfo's entries (TCP), all allowed.

    A name with any refused address is refused whole, as ``check_target`` always did: whoever
    controls a zone can mix answers, and which one a connection tries first is not ours to pick.
    A name of a form no resolver takes (``host_name_refusal``) is refused without asking one.
    Raises TargetRefused, or socket.gaierror when the name does not resolve.
    """
    check_host_name(host)
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    for info in infos:
        reason = address_refusal(ipaddress.ip_address(info[4][0].split("%")[0]))  # no scope id
        if reason:
            raise TargetRefused(f"webhook: {host} is {reason}; set notify.allow_private_targets to allow it")
    return infos


# -- the transport: the rule held where each connection is made ---------------------------------
def connect_checked(host: str, port: int, timeout, source_address, socket_options) -> socket.socket:
    """A socket connected to an address of ``host`` that the rule allows, resolving it once.

    Checking a name and then letting the HTTP library resolve it again leaves a gap in which
    the answer can change (DNS rebinding: public for the check, 127.0.0.1 for the send). Here
    the addresses judged are the addresses connected to: each is passed to urllib3 as a numeric
    host, which getaddrinfo returns as is. The peer is judged once more after connecting.
    """
    error: OSError | None = None
    for _family, _type, _proto, _name, sockaddr in resolve_checked(host, port, allowed_gai_family()):
        try:
            sock = create_connection((sockaddr[0], port), timeout, source_address=source_address,
                                     socket_options=socket_options)
        except OSError as e:
            error = e
            continue
        try:
            reason = address_refusal(ipaddress.ip_address(sock.getpeername()[0].split("%")[0]))
        except OSError:
            sock.close()
            raise
        if reason:
            sock.close()
            raise TargetRefused(f"webhook: {host} is {reason}")
        return sock
    raise error or OSError(f"no address to connect to for {host}")


class _CheckedConnect:
    """Mixin for urllib3's connections: ``_new_conn`` connects through ``connect_checked``.

    Only the socket's destination changes: the Host header, TLS SNI and the certificate's name
    check still use the URL's host, and certificate verification is whatever the caller asked
    (requests verifies by default). TargetRefused is not an OSError, so urllib3 and requests pass
    it up unchanged and the notifier records the delivery as refused rather than retrying it.
    """

    def _new_conn(self) -> socket.socket:
        try:
            sock = connect_checked(self._dns_host, self.port, self.timeout, self.source_address,
                                   self.socket_options)
        except socket.gaierror as e:
            raise NameResolutionError(self.host, self, e) from e
        except TimeoutError as e:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out. "
                                            f"(connect timeout={self.timeout})") from e
        except OSError as e:
            raise NewConnectionError(self, f"Failed to establish a new connection: {e}") from e
        sys.audit("http.client.connect", self, self.host, self.port)
        return sock


_CHECKED_POOLS = pools_with(_CheckedConnect)


class CheckedAdapter(HTTPAdapter):
    """A requests adapter whose every connection holds the address rule (``connect_checked``).

    Proxies are refused: a proxy resolves the name itself, where the rule cannot see.
    """

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_CHECKED_POOLS)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        raise TargetRefused("webhook: not sent through a proxy (the proxy would resolve the name unchecked)")


def webhook_session(allow_private: bool) -> requests.Session:
    """The session webhooks are sent with.

    Unless ``allow_private`` (notify.allow_private_targets: tests, private deployments), every
    connection goes through ``CheckedAdapter``, and the environment's proxy settings and .netrc
    are ignored (``trust_env``): a proxy would take the request out of the rule's sight.
    """
    session = requests.Session()
    if not allow_private:
        session.trust_env = False
        adapter = CheckedAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session
