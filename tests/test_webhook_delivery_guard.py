"""Webhook deliveries hold the address rule on the address they actually connect to: a name
checked when the watch was added (or just before sending) may answer differently when the
connection is made (DNS rebinding), and a proxy or a redirect would take the request elsewhere.

Nothing here leaves the machine: names are answered by a patched ``socket.getaddrinfo``, every
server listens on 127.0.0.1, and the public address the patched resolver gives first is never
connected to.
"""
from __future__ import annotations

import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from meteorpi_model.watch import Watch
from meteorpi_server.notify import TargetRefused, check_target

from .export_fixtures import wait_for
from .watch_fixtures import NotifierThread, Receiver, notify_config

PUBLIC = "93.184.215.14"  # a global address the patched resolver answers first; never connected to


# -- at connect time ------------------------------------------------------------------------------
class Rebinding:
    """``socket.getaddrinfo`` for names: ``name`` answers ``first`` once, then ``then``.

    Other hosts (the numeric addresses a connection is made to, ``localhost``) go to the real
    resolver. ``calls`` counts the lookups of ``name``."""

    def __init__(self, monkeypatch, name: str, first: str | None, then: str):
        self.name, self.first, self.then, self.calls = name, first, then, 0
        self.real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self)

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
        if host != self.name:
            return self.real(host, port, family, type, proto, flags)
        self.calls += 1
        address = self.first if self.calls == 1 and self.first else self.then
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 80)))]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_a_checked_session_refuses_loopback_and_nothing_reaches_the_server(receiver):
    from meteorpi_server.outbound import webhook_session
    with webhook_session(allow_private=False) as http, pytest.raises(TargetRefused, match="non-public"):
        http.post(receiver.url, data=b"{}", timeout=5)
    assert receiver.requests == 0
    with webhook_session(allow_private=True) as http:  # allowed: it arrives (unsigned, so 401)
        assert http.post(receiver.url, data=b"{}", timeout=5).status_code == 401
    assert receiver.requests == 1


def test_a_name_rebound_to_loopback_after_the_check_is_refused_when_connecting(monkeypatch, receiver):
    from meteorpi_server.outbound import webhook_session
    url = f"http://rebind.test:{receiver.server.server_port}/hook"
    dns = Rebinding(monkeypatch, "rebind.test", PUBLIC, "127.0.0.1")
    check_target(url, allow_private=False)  # the check sees the public address
    with webhook_session(allow_private=False) as http, pytest.raises(TargetRefused, match="127.0.0.1"):
        http.post(url, data=b"{}", timeout=5)
    assert dns.calls == 2 and receiver.requests == 0


def test_no_proxy_from_the_environment_is_used(monkeypatch, receiver):
    """A proxy would resolve the name itself, out of the check's sight."""
    from meteorpi_server.outbound import webhook_session
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{receiver.server.server_port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    Rebinding(monkeypatch, "hook.test", None, "127.0.0.1")
    with webhook_session(allow_private=False) as http, pytest.raises(TargetRefused):
        http.post("http://hook.test/hook", data=b"{}", timeout=5)
    assert receiver.requests == 0


class TLSServer:
    """HTTPS on 127.0.0.1 with a certificate for ``name`` from ``ca``; records SNI and Host."""

    def __init__(self, ca, name: str):
        self.sni: list[str | None] = []
        self.hosts: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.hosts.append(self.headers["Host"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(context)
        context.sni_callback = lambda sock, sni, ctx: self.sni.append(sni)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_port
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_https_connects_to_the_checked_address_but_verifies_the_name(monkeypatch, tmp_path):
    """The socket goes to the resolved address; SNI, the certificate check and Host use the name."""
    import trustme

    from meteorpi_server import outbound
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    Rebinding(monkeypatch, "hook.test", None, "127.0.0.1")
    real_rule = outbound.address_refusal
    monkeypatch.setattr(outbound, "address_refusal",  # loopback stands in for a public host here
                        lambda a: None if str(a) == "127.0.0.1" else real_rule(a))
    good, wrong = TLSServer(ca, "hook.test"), TLSServer(ca, "other.test")
    try:
        with outbound.webhook_session(allow_private=False) as http:
            r = http.post(f"https://hook.test:{good.port}/hook", data=b"{}", timeout=5, verify=str(ca_file))
            assert r.status_code == 204
            assert good.sni == ["hook.test"] and good.hosts == [f"hook.test:{good.port}"]
            with pytest.raises(Exception, match="(?i)certificate|hostname"):
                http.post(f"https://hook.test:{wrong.port}/hook", data=b"{}", timeout=5, verify=str(ca_file))
            assert wrong.hosts == []
    finally:
        good.close()
        wrong.close()


# -- a delivery -----------------------------------------------------------------------------------
@pytest.fixture
def alice(db):
    db.create_or_update_user("alice", "alice-pw", ["user"])
    return "alice"


def test_a_delivery_to_a_name_rebound_to_loopback_is_refused_and_recorded(db, alice, receiver, monkeypatch):
    url = f"http://rebind.test:{receiver.server.server_port}/hook"
    watch, secret, _ = db.create_watch(Watch(name="rebound", kind="coincidence", webhook=url), alice)
    receiver.secrets.append(secret)
    dns = Rebinding(monkeypatch, "rebind.test", PUBLIC, "127.0.0.1")
    notifier = NotifierThread(db, notify_config(allow_private_targets=False))
    try:
        db.queue_test(watch)
        wait_for(lambda: [e for e in db.delivery_log(watch.watch_id) if e.state != "pending"], 20,
                 "the delivery to be settled")
    finally:
        notifier.close()
    [entry] = db.delivery_log(watch.watch_id)
    assert dns.calls >= 2  # the check saw the public answer, the connection the loopback one
    assert receiver.requests == 0 and receiver.received == []
    assert entry.state == "failed" and "127.0.0.1" in entry.last_error and "non-public" in entry.last_error


def test_a_redirect_is_not_followed(db, alice):
    """A 3xx is an answer, not a new target: it is recorded and its Location never visited."""
    elsewhere = Receiver()

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(307)
            self.send_header("Location", elsewhere.url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    redirecting = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=redirecting.serve_forever, daemon=True).start()
    try:
        watch, _, _ = db.create_watch(Watch(name="moved", kind="coincidence",
                                            webhook=f"http://127.0.0.1:{redirecting.server_port}/hook"), alice)
        notifier = NotifierThread(db, notify_config(max_attempts=1))
        try:
            db.queue_test(watch)
            wait_for(lambda: [e for e in db.delivery_log(watch.watch_id) if e.state != "pending"], 20,
                     "the delivery to be settled")
            time.sleep(0.2)
        finally:
            notifier.close()
        [entry] = db.delivery_log(watch.watch_id)
        assert entry.last_status == 307 and elsewhere.requests == 0
    finally:
        redirecting.shutdown()
        redirecting.server_close()
        elsewhere.close()
