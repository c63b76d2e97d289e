"""Configuration loading and the `meteorpi` command's user management, as a user runs them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meteorpi_db import ConfigError, DatabaseError, load_config
from meteorpi_db.config import Config
from meteorpi_db.migrations import available
from meteorpi_model import MeteorpiError

REPO = Path(__file__).resolve().parents[1]


def test_config_yml_documents_every_default():
    """config.yml at the repository root states exactly the built-in defaults (it cannot drift)."""
    documented = yaml.safe_load((REPO / "config.yml").read_text())
    assert documented == Config().as_dict()


def test_environment_overrides_file(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("server:\n  port: 9000\n  public_read: true\nexport:\n  read_timeout_seconds: 5\n")
    cfg = load_config(path, env={"METEORPI_SERVER_PORT": "9100", "METEORPI_DATA_DIR": str(tmp_path),
                                 "METEORPI_DATABASE_URL": "postgresql://u:p@h/db"})
    assert (cfg.server.port, cfg.server.public_read, cfg.export.read_timeout_seconds) == (9100, True, 5.0)
    assert cfg.data_path == tmp_path and cfg.database.url == "postgresql://u:p@h/db"


@pytest.mark.parametrize("text,env,message", [
    ("serve:\n  port: 1\n", {}, "unknown configuration key 'serve'"),
    ("server:\n  prot: 1\n", {}, "unknown configuration key 'server.prot'"),
    ("server:\n  port: eighty\n", {}, "server.port: expected int, got str"),
    ("server:\n  public_read: 1\n", {}, "server.public_read: expected bool"),
    ("", {"METEORPI_SERVER_WORKERS": "many"}, "server.workers: expected int"),
    ("server: [\n", {}, "is not valid YAML at line"),
    ("logging:\n  level: LOUD\n", {}, "logging.level: unknown level"),
])
def test_bad_configuration_is_one_clear_error(tmp_path, text, env, message):
    path = tmp_path / "c.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path, env=env)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_configuration_error_is_not_a_storage_error(tmp_path):
    """A wrong configuration is its own kind of error: code that retries or reports storage
    faults (DatabaseError) must not take it for one; it is still one of meteorpi's errors."""
    path = tmp_path / "c.yml"
    path.write_text("server:\n  port: eighty\n")
    with pytest.raises(MeteorpiError) as e:
        load_config(path, env={})
    assert isinstance(e.value, ConfigError) and not isinstance(e.value, DatabaseError)


def test_the_cli_reports_a_bad_configuration_on_one_line(tmp_path):
    """`meteorpi` with a wrong setting: exit status 1 and one line naming the key."""
    env = {**os.environ, "METEORPI_DATA_DIR": str(tmp_path), "METEORPI_SERVER_WORKERS": "many"}
    out = meteorpi(["user", "list"], env)
    assert out.returncode == 1
    assert out.stderr.splitlines() == ["Error: server.workers: expected int, got str 'many'"]


def meteorpi(args, env, stdin=None):
    return subprocess.run([sys.executable, "-m", "meteorpi_server", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def cli_env(make_database):
    """Environment for the CLI pointing at the test database (a server by URL, as in production)."""
    db = make_database("meteorpi_cli")
    env = {**os.environ, "METEORPI_DATABASE_URL": db.url, "METEORPI_DATA_DIR": str(db.config.data_path),
           "METEORPI_LOGGING_LEVEL": "WARNING"}
    return db, env


def test_user_add_then_get_user_checks_the_password(cli_env):
    """The issue's acceptance: `meteorpi user add` then get_user accepts the right password only."""
    db, env = cli_env
    out = meteorpi(["user", "add", "alice", "--role", "import", "--role", "user", "--password-stdin"], env,
                   stdin="s3cret pass\n")
    assert out.returncode == 0, out.stderr
    assert "s3cret" not in out.stdout + out.stderr
    assert db.get_user("alice", "s3cret pass").roles == ["import", "user"]
    assert db.get_user("alice", "s3cret") is None
    listed = meteorpi(["user", "list"], env)
    assert listed.stdout.strip() == "alice\timport,user"
    from meteorpi_model.watch import Watch
    db.create_watch(Watch(name="hook", kind="event", webhook="https://example.org/h"), "alice")
    deleted = meteorpi(["user", "delete", "alice"], env)
    assert deleted.returncode == 0 and deleted.stdout.strip() == "user alice deleted, with their 1 watch(es)"
    assert db.get_users() == [] and db.get_watches() == []


@pytest.mark.parametrize("args,stdin,message", [
    (["user", "delete", "ghost"], None, "Error: no user 'ghost'"),
    (["user", "add", "bad name", "--role", "user", "--password-stdin"], "pw\n", "Error: user.user_id:"),
    (["user", "add", "dave", "--role", "root", "--password-stdin"], "pw\n", "Invalid value for '--role'"),
    (["user", "add", "dave", "--role", "user", "--password-stdin"], "\n", "Error: the password must not be empty"),
    # no terminal and no --password-stdin: getpass printed a Python warning, then "Aborted!"
    (["user", "add", "dave", "--role", "user"], "pw\n", "Error: no terminal to ask for the password on"),
    (["feed", "--url", "http://127.0.0.1:9", "--user", "dave"], "", "Error: no terminal to ask for the password on"),
])
def test_cli_bad_input_is_one_line_and_non_zero(cli_env, args, stdin, message):
    _, env = cli_env
    out = meteorpi(args, env, stdin=stdin)
    assert out.returncode != 0
    assert message in out.stderr and "Traceback" not in out.stderr
    assert "Warning" not in out.stderr and "Aborted" not in out.stderr


def test_cli_bad_config_is_one_line(cli_env, tmp_path):
    _, env = cli_env
    out = meteorpi(["user", "list"], {**env, "METEORPI_SERVER_PORT": "abc"})
    assert out.returncode != 0 and out.stderr.strip() == "Error: server.port: expected int, got str 'abc'"


def test_schema_command_prints_the_wire_schema(cli_env):
    _, env = cli_env
    out = meteorpi(["schema"], env)
    schema = json.loads(out.stdout)
    assert {"CameraStatus", "FileRecord", "Event"} <= set(schema["$defs"])


def test_db_init_on_the_embedded_default(tmp_path):
    """With no URL configured, `meteorpi db init` starts an embedded server in the data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METEORPI_")}
    env.update(METEORPI_DATA_DIR=str(tmp_path / "data"), METEORPI_LOGGING_LEVEL="WARNING")
    out = meteorpi(["db", "init"], env)
    assert out.returncode == 0, out.stderr
    from meteorpi_db.migrations import available
    assert f"schema version {available()[-1][0]}" in out.stdout
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()
    assert not (tmp_path / "data" / "postgres" / "postmaster.pid").exists(), "server left running"
