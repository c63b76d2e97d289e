"""Which addresses a webhook may reach (meteorpi_server.outbound.address_refusal, through
check_target): ordinary non-public addresses, and IPv6 forms that embed a private IPv4 address,
which Python's ``ipaddress`` calls global although a NAT64 gateway, a 6to4 or Teredo stack or a
dual-stack socket would carry the request to that IPv4 address.

Nothing here leaves the machine: every host is an address literal, for which getaddrinfo does
no DNS lookup.
"""
from __future__ import annotations

import pytest

from meteorpi_server.notify import TargetRefused, check_target

PUBLIC = "93.184.215.14"  # a global address (only judged here, never connected to)

# IPv6 forms that embed a private IPv4: Python 3.11's ipaddress calls most of them global.
EMBEDDING_PRIVATE = [
    "::127.0.0.1",                            # IPv4-compatible (::/96, deprecated)
    "::a00:1",                                # IPv4-compatible 10.0.0.1
    "64:ff9b::7f00:1",                        # NAT64 well-known prefix, 127.0.0.1
    "64:ff9b::c0a8:101",                      # NAT64 well-known prefix, 192.168.1.1
    "64:ff9b:1::808:808",                     # NAT64 local-use /48: refused whatever it embeds
    "2002:7f00:1::",                          # 6to4 via 127.0.0.1
    "2002:a9fe:a9fe::1",                      # 6to4 via 169.254.169.254 (cloud metadata)
    "2001:0:7f00:1:8000:63bf:3fff:fdd2",      # Teredo, server 127.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",   # Teredo, public server, client 127.0.0.1
    "::ffff:127.0.0.1",                       # IPv4-mapped
    "::ffff:0:7f00:1",                        # IPv4-translated (SIIT)
]
ORDINARY_REFUSED = [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "255.255.255.255", "192.0.2.1",
    "::", "::1", "fe80::1", "fc00::1", "fd00:ec2::254", "ff0e::1", "2001:db8::1",
]
ALLOWED = [
    "8.8.8.8", PUBLIC, "2606:4700::1111",
    "64:ff9b::808:808",   # NAT64 to a public IPv4: what DNS64 gives an IPv6-only host for any IPv4 name
    "2002:808:808::1",    # 6to4 via a public relay address
    "::ffff:8.8.8.8",     # IPv4-mapped public
]


def _url(address: str, port: int = 80) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/hook"


@pytest.mark.parametrize("address", EMBEDDING_PRIVATE + ORDINARY_REFUSED)
def test_non_public_addresses_and_ipv6_forms_embedding_them_are_refused(address):
    with pytest.raises(TargetRefused, match="non-public|NAT64"):
        check_target(_url(address), allow_private=False)
    check_target(_url(address), allow_private=True)  # private deployments and tests


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_and_forms_embedding_public_ones_are_allowed(address):
    check_target(_url(address), allow_private=False)


@pytest.mark.parametrize("address, embedded", [("64:ff9b::7f00:1", "127.0.0.1"), ("::a00:1", "10.0.0.1"),
                                               ("2002:a9fe:a9fe::1", "169.254.169.254")])
def test_a_refusal_names_the_embedded_address(address, embedded):
    """Whoever reads the delivery log sees why an address that looks public was refused."""
    import ipaddress

    from meteorpi_server.outbound import address_refusal
    assert embedded in address_refusal(ipaddress.ip_address(address))


# Host names getaddrinfo's IDNA step chokes on (UnicodeError), and a name too long for DNS.
BAD_HOST_FORMS = {"a..b": "empty label", ".example.org": "empty label", "a.\u3002b": "empty label",
                  "x" * 64 + ".example.org": "longer than 63", ("y" * 60 + ".") * 5 + "org": "longer than 253",
                  "\u00ad.example.org": "cannot be written in IDNA"}  # nameprep maps a soft hyphen to nothing


@pytest.mark.parametrize("host", BAD_HOST_FORMS, ids=lambda h: h[:20])
@pytest.mark.parametrize("allow_private", [False, True])
def test_a_host_of_a_form_no_resolver_takes_is_refused_without_resolving(host, allow_private, monkeypatch):
    """Review finding: such names went to getaddrinfo, whose IDNA step raised UnicodeError;
    under gevent its threadpool printed two tracebacks to the server's log per request
    (tests/test_watch_serving.py sees that log). They are refused by their form, naming the
    host, before anything resolves them — private targets allowed or not — so the resolver is
    never asked (here: getaddrinfo fails the test if it is called)."""
    import socket

    def no_resolving(*args, **kwargs):
        raise AssertionError(f"getaddrinfo was asked for {args[0]!r}")
    monkeypatch.setattr(socket, "getaddrinfo", no_resolving)
    with pytest.raises(TargetRefused) as refused:
        check_target(f"http://{host}/hook", allow_private=allow_private)
    assert str(refused.value).startswith(f"webhook: {host!r} is not a host name: ")
    assert BAD_HOST_FORMS[host] in str(refused.value)
    from meteorpi_server.outbound import resolve_checked
    with pytest.raises(TargetRefused, match="is not a host name"):
        resolve_checked(host, 80)  # each delivery's connection asks through here


@pytest.mark.parametrize("host", ["example.org", "example.org.", "b\u00fccher.example", "x" * 63 + ".example.org",
                                  "my_service", "127.0.0.1", "[::1]", "[fe80::1%25eth0]"])
def test_host_names_of_a_usable_form_pass_the_form_check(host):
    check_target(f"http://{host}/hook", allow_private=True)  # no resolving: nothing leaves the machine
