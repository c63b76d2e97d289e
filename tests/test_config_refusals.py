"""Bad configuration, as an operator meets it: the real ``meteorpi`` command refuses with one line
naming what is wrong and a non-zero exit — never a traceback, never a secret, never a crash or a
spin later on, never anything written first.

Each case runs the command in a child process with a scratch data directory and nothing from
the caller's ``METEORPI_*`` environment, then checks the whole of what it printed.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from meteorpi_db import ConfigError, load_config
from meteorpi_db.config import Config
from meteorpi_model.urls import redact_url

SECRET = "SECRETPW"
TIMEOUT = 60


def run_meteorpi(tmp_path: Path, *args: str, config: bytes | str | None = None, cwd: Path | None = None,
                 **env: str) -> subprocess.CompletedProcess:
    """``meteorpi ARGS`` with a scratch data directory, ``env`` and (if given) a config file."""
    child = {k: v for k, v in os.environ.items() if not k.startswith("METEORPI_")}
    child.update(METEORPI_DATA_DIR=str(tmp_path / "data"), METEORPI_LOGGING_LEVEL="WARNING")
    if config is not None:
        path = tmp_path / "config.yml"
        path.write_bytes(config if isinstance(config, bytes) else config.encode())
        child["METEORPI_CONFIG"] = str(path)
    child.update(env)
    # A session of its own: if a regression hangs (gunicorn restarting crashing workers for
    # ever, an exporter spinning), the whole process group is killed, not only its leader.
    proc = subprocess.Popen([sys.executable, "-m", "meteorpi_server", *args], env=child, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, cwd=cwd or tmp_path,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"meteorpi {' '.join(args)} still running after {TIMEOUT}s: {stderr[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture(autouse=True)
def no_server_left(tmp_path):
    """Stop an embedded PostgreSQL a (wrongly) accepted command left in the scratch data dir."""
    yield
    pidfile = tmp_path / "data" / "postgres" / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    # By its pid, fast shutdown (pg_ctl, run as the service user under root, may not reach
    # pytest's private temporary directory).
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        pass


def assert_refused(out: subprocess.CompletedProcess, *named: str, secret: str = SECRET) -> str:
    """Non-zero exit, exactly one line on stderr naming each of ``named``, no traceback, and
    ``secret`` nowhere in what was printed."""
    printed = out.stdout + out.stderr
    assert out.returncode != 0, printed
    assert "Traceback" not in printed, printed
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), printed
    for word in named:
        assert word in lines[0], lines[0]
    assert secret not in printed, printed
    return lines[0]


# -- 1. a database URL libpq cannot parse: its error quotes the whole DSN ----------------------

@pytest.mark.parametrize("url", [
    f"mysql://u:{SECRET}@127.0.0.1/db",
    f"postgresql://u:{SECRET}@127.0.0.1:1/db?bogus=1",
    f"postgresql://u:{SECRET}@[::1",
    f"postgresql://u:{SECRET}%zz@127.0.0.1/db",   # libpq quotes the bad percent-token: the password
    f"host=127.0.0.1 password={SECRET} bogus=1",
    f"host=127.0.0.1 password='{SECRET} and more",
    "=garbage",
])
def test_a_database_url_that_cannot_be_parsed_is_one_line_without_its_password(tmp_path, url):
    assert_refused(run_meteorpi(tmp_path, "user", "list", METEORPI_DATABASE_URL=url), "database.url")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("url", [
    f"postgresql://u:{SECRET}@[::1", f"mysql://u:{SECRET}/x@h/db", f"host=h password={SECRET} port=1",
    f"host=h password = '{SECRET} x' port=1", f"http://u:{SECRET}@h:notaport/x",
])
def test_redact_url_hides_the_password_of_any_url_and_never_raises(url):
    assert SECRET not in redact_url(url)


# -- 2. a value of the wrong type for a secret-bearing key is not echoed ----------------------

@pytest.mark.parametrize("text,key", [
    ("notify:\n  smtp_password: 12345678\n", "notify.smtp_password"),
    (f"notify:\n  smtp_password: [{SECRET}]\n", "notify.smtp_password"),
    (f"database:\n  url: [postgresql://u:{SECRET}@h/db]\n", "database.url"),
    (f"database:\n  url: {{postgresql://u:{SECRET}@h/db: 1}}\n", "database.url"),
    (f"notify:\n  base_url: [http://u:{SECRET}@h/]\n", "notify.base_url"),
])
def test_a_wrong_type_for_a_secret_is_named_not_quoted(tmp_path, text, key):
    secret = "12345678" if "12345678" in text else SECRET
    assert_refused(run_meteorpi(tmp_path, "user", "list", config=text), key, secret=secret)


def test_string_settings_from_the_environment_are_taken_as_text(tmp_path):
    """An all-digit password, or one YAML cannot parse, is a password, not an error quoting it."""
    for password in ("12345678", "[not: yaml", "true"):
        cfg = load_config(None, env={"METEORPI_NOTIFY_SMTP_PASSWORD": password, "METEORPI_DATA_DIR": str(tmp_path)})
        assert cfg.notify.smtp_password == password


# -- 3. every numeric setting has a declared range, checked when the configuration loads --------

def numeric_settings() -> list[tuple[str, str, object]]:  # object: config.Range
    out = []
    for section in dataclasses.fields(Config):
        sub = section.default_factory() if section.default_factory is not dataclasses.MISSING else None
        for f in dataclasses.fields(sub) if dataclasses.is_dataclass(sub) else ():
            if "int" in str(f.type) or "float" in str(f.type):
                out.append((section.name, f.name, f.metadata.get("range")))
    return out


def test_every_numeric_setting_declares_its_range():
    missing = [f"{s}.{k}" for s, k, r in numeric_settings() if r is None]
    assert numeric_settings() and missing == []


@pytest.mark.parametrize("section,key,valid", numeric_settings(), ids=lambda v: str(v))
def test_each_range_is_checked_at_its_bounds(tmp_path, section, key, valid):
    """Just outside either bound is refused naming the key and the range; the bounds pass."""
    name = f"METEORPI_{section}_{key}".upper()
    is_int = "int" in str({f.name: f.type for f in dataclasses.fields(getattr(Config(), section))}[key])
    step = 1 if is_int else 0.001
    outside = [valid.low if valid.above else valid.low - step]
    inside = [valid.low + step if valid.above else valid.low]
    if valid.high is not None:
        outside.append(valid.high + step)
        inside.append(valid.high)
    if not is_int:
        outside += [float("nan"), float("inf")]
    def as_env(value: float) -> dict[str, str]:
        text = ".nan" if value != value else ".inf" if value == float("inf") else repr(value)
        return {"METEORPI_DATA_DIR": str(tmp_path), name: text}
    for value in outside:
        with pytest.raises(ConfigError) as e:
            load_config(None, env=as_env(value))
        assert str(e.value).startswith(f"{section}.{key}: must be {valid}, got ") and "\n" not in str(e.value)
    for value in inside:
        assert getattr(getattr(load_config(None, env=as_env(value)), section), key) == value


@pytest.mark.parametrize("args,env,named", [
    (["serve"], {"METEORPI_SERVER_PORT": "-5"}, "server.port: must be between 0 and 65535, got -5"),
    (["serve"], {"METEORPI_SERVER_PORT": "70000"}, "server.port: must be between 0 and 65535, got 70000"),
    (["serve"], {"METEORPI_SERVER_WORKERS": "0"}, "server.workers: must be between 1 and 64, got 0"),
    (["user", "list"], {"METEORPI_DATABASE_POOL_MAX": "-3"}, "database.pool_max: must be between 1 and"),
    (["user", "list"], {"METEORPI_DATABASE_POOL_MAX": "0"}, "database.pool_max: must be between 1 and"),
    (["export", "run", "--once"], {"METEORPI_EXPORT_CONNECT_TIMEOUT_SECONDS": "0"},
     "export.connect_timeout_seconds: must be more than 0"),
    (["export", "run", "--once"], {"METEORPI_EXPORT_CONNECT_TIMEOUT_SECONDS": "-1"},
     "export.connect_timeout_seconds: must be more than 0"),
    (["export", "run"], {"METEORPI_EXPORT_INTERVAL_SECONDS": "-1"}, "export.interval_seconds: must be more than 0"),
    (["export", "run"], {"METEORPI_EXPORT_INTERVAL_SECONDS": "0"}, "export.interval_seconds: must be more than 0"),
])
def test_a_setting_out_of_range_is_refused_before_anything_runs(tmp_path, args, env, named):
    assert_refused(run_meteorpi(tmp_path, *args, **env), named)
    assert not (tmp_path / "data").exists()  # refused before the embedded server was started


def test_a_port_out_of_range_in_the_file_is_refused_too(tmp_path):
    assert_refused(run_meteorpi(tmp_path, "serve", config="server:\n  port: 70000\n"), "server.port", "65535")


# -- 4. a TLS pair that does not load is refused by the master, naming the file ---------------

@pytest.fixture(scope="module")
def pems(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("pems")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    paths = {name: str(folder / f"{name}.pem") for name in ("ca", "cert", "key", "other_key", "encrypted_key")}
    ca.cert_pem.write_to_path(paths["ca"])
    issued.cert_chain_pems[0].write_to_path(paths["cert"])
    issued.private_key_pem.write_to_path(paths["key"])
    trustme.CA().issue_cert("x").private_key_pem.write_to_path(paths["other_key"])
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
    Path(paths["encrypted_key"]).write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    return paths


@pytest.mark.parametrize("cert,key,named", [
    ("ca", "/etc/hostname", "server.tls_key: /etc/hostname"),
    ("cert", "/etc/hostname", "server.tls_key: /etc/hostname"),
    ("/etc/hostname", "key", "server.tls_cert: /etc/hostname"),
    ("/tmp", "/tmp", "server.tls_cert: /tmp is a directory"),
    ("cert", "/tmp", "server.tls_key: /tmp is a directory"),
    ("cert", "other_key", "is not the private key of the certificate"),
    ("cert", "encrypted_key", "is encrypted"),
])
def test_serve_refuses_a_tls_pair_that_does_not_load(tmp_path, pems, cert, key, named):
    """Before: workers died loading it and gunicorn restarted them for ever."""
    out = run_meteorpi(tmp_path, "serve", "--port", "0", METEORPI_SERVER_TLS_CERT=pems.get(cert, cert),
                       METEORPI_SERVER_TLS_KEY=pems.get(key, key))
    assert_refused(out, named)
    assert not (tmp_path / "data").exists()


# -- 5. the file's bytes and keys, and the environment's names ----------------------------------

@pytest.mark.parametrize("text,named", [
    (b"\xff\xfeserver:\n  port: 1\n", "is not UTF-8 text"),
    (b"server:\n  port: 1\n  workers: 2\n  port: 2\n", "key 'port' given twice (again at line 4)"),
    (b"server:\n  port: 1\nserver:\n  workers: 2\n", "key 'server' given twice (again at line 3)"),
])
def test_a_config_file_that_is_not_utf8_or_repeats_a_key_is_refused(tmp_path, text, named):
    assert_refused(run_meteorpi(tmp_path, "user", "list", config=text), named)


@pytest.mark.parametrize("name,named", [
    ("METEORPI_BOGUS", "unknown environment variable METEORPI_BOGUS"),
    ("METEORPI_DATABASE_ULR", "did you mean METEORPI_DATABASE_URL?"),
    ("METEORPI_SERVER", "unknown environment variable METEORPI_SERVER"),
])
def test_an_unknown_meteorpi_environment_variable_is_refused_naming_it(tmp_path, name, named):
    """A misspelt METEORPI_DATABASE_URL used to leave the embedded database in use silently;
    the value (here a URL with a password) is never shown."""
    assert_refused(run_meteorpi(tmp_path, "user", "list", **{name: f"postgresql://u:{SECRET}@h/db"}), named)
    assert not (tmp_path / "data").exists()


# -- 6. a data directory that cannot be used -----------------------------------------------------

def test_a_data_directory_that_cannot_be_used_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    for data_dir, named in [(tmp_path / "a-file", "is not a directory"),
                            (tmp_path / "a-file" / "under", "Not a directory"),
                            (Path("/proc/self"), "/proc/self")]:
        assert_refused(run_meteorpi(tmp_path, "user", "list", METEORPI_DATA_DIR=str(data_dir)),
                       f"data_dir: ", named)
    assert_refused(run_meteorpi(tmp_path, "serve", "--port", "0", METEORPI_DATA_DIR=str(tmp_path / "a-file")),
                   "data_dir: ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_data_directory_without_write_permission_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert_refused(run_meteorpi(tmp_path, "user", "list", METEORPI_DATA_DIR=str(locked)), "data_dir: ",
                   str(locked))


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_data_directory_is_refused_not_the_current_one(tmp_path, value):
    """Before: a PostgreSQL cluster appeared in the current directory."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    assert_refused(run_meteorpi(tmp_path, "user", "list", cwd=cwd, METEORPI_DATA_DIR=value), "data_dir: must not be empty")
    assert list(cwd.iterdir()) == []
