"""Passwords never cross the internet in clear: ``meteorpi serve`` speaks TLS itself, the exporter
trusts a private CA through ``export.ca_bundle`` (never by switching checks off), and
``export add`` refuses a plain-HTTP target beyond the site's own network unless told
``--insecure-http``, after which every run warns. Certificates are made here, by trustme."""
from __future__ import annotations


import pytest
import trustme
from click.testing import CliRunner

from meteorpi_server.cli import main
from tests.export_fixtures import add_export, cli_env, meteorpi, night
from tests.test_server_serving import Served, SlowClient, serve_db  # noqa: F401 (a fixture)

SECRET = "correct-horse-battery"


def _add(node, target: str, *flags: str):
    return CliRunner().invoke(main, ["export", "add", "central", "--target", target, "--user", "importer",
                                     "--type", "event", "--password-stdin", *flags],
                              env=cli_env(node), input=SECRET + "\n")


@pytest.mark.parametrize("target", [
    "http://archive.example.org/import", "http://8.8.8.8/import", "http://[2001:db8::1]:8080/import",
    "http://100.64.0.1/import", "http://user:pw@archive.example.org/import", "http://localhost.example.org/import",
])
def test_export_add_refuses_plain_http_beyond_loopback_and_private_addresses(node, target):
    result = _add(node, target)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert "plain HTTP" in result.output and "--insecure-http" in result.output
    assert SECRET not in result.output and ":pw@" not in result.output
    assert node.get_export_configurations() == []


@pytest.mark.parametrize("target", [
    "https://archive.example.org/import", "http://127.0.0.1:12080/import", "http://localhost/import",
    "http://10.1.2.3/import", "http://172.20.0.5/import", "http://192.168.1.10/import",
    "http://169.254.10.1/import", "http://[::1]/import", "http://[fd12:3456::1]/import", "http://[fe80::1]/import",
])
def test_export_add_accepts_https_and_plain_http_on_the_sites_own_network(node, target):
    result = _add(node, target)
    assert result.exit_code == 0, result.output
    assert node.get_export_configuration("central").target_url == target


def test_insecure_http_is_accepted_when_asked_and_every_run_warns(node):
    assert _add(node, "http://archive.example.org/import", "--insecure-http").exit_code == 0
    env = cli_env(node, METEORPI_EXPORT_FAST_PATH="false")  # nothing due: no request is made
    for _ in range(2):
        run = meteorpi("export", "run", "--once", env=env)
        assert run.returncode == 0, run.stderr
        assert "sends the password of importer in clear over plain HTTP to http://archive.example.org/import" \
            in run.stderr
        assert SECRET not in run.stdout + run.stderr


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A private CA and a certificate of 127.0.0.1 it signed, as PEM files."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    paths = {name: str(folder / f"{name}.pem") for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    issued.private_key_pem.write_to_path(paths["key"])
    for i, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(paths["cert"], append=i > 0)
    return paths


def test_meteorpi_serve_speaks_tls_and_the_exporter_trusts_only_a_configured_ca(serve_db, node, tmp_path,
                                                                               certificates):
    """Served over HTTPS with a certificate of a private CA: an exporter without the CA's
    certificate refuses the server (saying what to set), with ``export.ca_bundle`` it delivers
    the night. A client that opens a TLS connection and never shakes hands is dropped by the
    head deadline."""
    served = Served(serve_db, workers=1, verify=certificates["ca"], METEORPI_SERVER_HEADER_TIMEOUT_SECONDS="2",
                    METEORPI_SERVER_TLS_CERT=certificates["cert"], METEORPI_SERVER_TLS_KEY=certificates["key"])
    try:
        assert served.url.startswith("https://")
        silent = SlowClient(served.url)
        silent.start()
        recorded = night(node, tmp_path, events=1, files_per_event=2, standalone=0)
        add_export(node, served.url + "/import", "event")
        env = cli_env(node, METEORPI_EXPORT_DEFER_ON_FAILURE_SECONDS="0")
        refused = meteorpi("export", "run", "--once", env=env)
        assert refused.returncode == 1
        assert "TLS certificate is not trusted" in refused.stderr and "export.ca_bundle" in refused.stderr
        delivered = meteorpi("export", "run", "--once", env={**env, "METEORPI_EXPORT_CA_BUNDLE": certificates["ca"]})
        assert delivered.returncode == 0, delivered.stderr
        assert serve_db.get_event(recorded.events[0].event_id) is not None
        silent.join(30)
        assert 1.5 <= silent.ended_after < 10 and silent.answer == b""
    finally:
        code = served.stop()
    assert code == 0, "".join(served.lines)
    assert "Traceback" not in "".join(served.lines)


@pytest.mark.parametrize("settings, message", [
    ({"METEORPI_SERVER_TLS_CERT": "cert"}, "server.tls_cert and server.tls_key go together"),
    ({"METEORPI_SERVER_TLS_CERT": "/nonexistent/cert.pem", "METEORPI_SERVER_TLS_KEY": "/nonexistent/key.pem"},
     "server.tls_cert: cannot read /nonexistent/cert.pem"),
    ({"METEORPI_SERVER_BODY_MIN_RATE": "0"}, "server.body_min_rate: must be more than 0, got 0"),
])
def test_meteorpi_serve_names_a_serving_setting_that_is_wrong(serve_db, settings, message):
    env = {**cli_env(serve_db), **settings}
    result = meteorpi("serve", "--port", "0", env=env)
    assert result.returncode == 1
    assert f"Error: {message}" in result.stderr and "Traceback" not in result.stderr


def test_a_ca_bundle_that_cannot_be_read_is_a_one_line_error(node):
    add_export(node, "https://127.0.0.1:1/import", "event")
    result = meteorpi("export", "run", "--once", env=cli_env(node, METEORPI_EXPORT_CA_BUNDLE="/nonexistent/ca.pem"))
    assert result.returncode == 1
    assert "Error: export.ca_bundle: cannot read /nonexistent/ca.pem" in result.stderr
    assert "Traceback" not in result.stderr
