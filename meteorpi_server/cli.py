"""The ``meteorpi`` command. Thin: each command parses, calls the domain, and turns domain errors
into one-line messages with a non-zero exit (never a traceback for bad input)."""
from __future__ import annotations

import json
import logging
import sys
from functools import wraps

import click

from meteorpi_model import ROLES, MeteorpiError, wire_schema

log = logging.getLogger("meteorpi.cli")


class Context:
    """What every command shares: the loaded configuration and, lazily, the database."""

    def __init__(self, config_path: str | None):
        self.config_path = config_path
        self._config = None
        self._db = None

    @property
    def config(self):
        if self._config is None:
            from meteorpi_db import load_config
            self._config = load_config(self.config_path)
            logging.basicConfig(level=self._config.logging.level.upper(),
                                format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return self._config

    @property
    def db(self):
        if self._db is None:
            from meteorpi_db import MeteorDatabase
            self._db = MeteorDatabase(config=self.config)
        return self._db


pass_ctx = click.make_pass_decorator(Context)


def domain_errors(fn):
    """Turn meteorpi's own exceptions into ``Error: <message>`` and exit status 1."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MeteorpiError as e:
            raise click.ClickException(str(e)) from None
    return wrapper


class LazyGroup(click.Group):
    """Subcommands imported when used (click's documented lazy-loading pattern): a camera node
    runs `meteorpi export run` every few minutes and should not import the demo or the server."""

    LAZY = {"export": "meteorpi_server.cli_export:export", "demo": "meteorpi_server.demo:demo",
            "ingest": "meteorpi_server.cli_ingest:ingest",
            "feed": "meteorpi_server.cli_feed:feed", "watch": "meteorpi_server.cli_watch:watch",
            "notify": "meteorpi_server.cli_watch:notify"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.LAZY))

    def get_command(self, ctx: click.Context, name: str):
        if name in self.LAZY:
            import importlib
            module, attribute = self.LAZY[name].split(":")
            return getattr(importlib.import_module(module), attribute)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="METEORPI_CONFIG",
              help="YAML configuration file (see config.yml for every key). Env: METEORPI_CONFIG.")
@click.version_option(package_name="meteorpi")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """meteorpi: store what meteor cameras record and replicate it to a central archive."""
    ctx.obj = Context(config_path)


@main.group()
def db() -> None:
    """Manage the database."""


@db.command("init")
@pass_ctx
@domain_errors
def db_init(ctx: Context) -> None:
    """Create or migrate the database (starting the embedded server if none is configured)."""
    database = ctx.db
    click.echo(f"database ready at schema version {database.schema_version}; "
               f"files in {database.file_store.root}")


@main.group()
def user() -> None:
    """Manage users and their roles."""


def read_password(password_stdin: bool, label: str = "Password", confirm: bool = True) -> str:
    """A password from stdin's first line (for scripts: never on the command line, where `ps`
    shows it) or from a hidden prompt (asked twice when ``confirm``). Without a terminal the
    prompt reads stdin's lines itself: getpass printed a Python warning and "Password input may
    be echoed", then, stdin empty, click's bare "Aborted!"; running out of input now says what
    to do instead."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = click.prompt(label, hide_input=True, confirmation_prompt=confirm)
    else:
        password = _line_or_advice(label)
        if confirm and _line_or_advice("Repeat for confirmation") != password:
            raise click.ClickException("the two passwords given differ")
    if not password:
        raise click.ClickException("the password must not be empty")
    return password


def _line_or_advice(label: str) -> str:
    """One line of stdin (no terminal: nothing echoes it), the prompt on stderr."""
    click.echo(f"{label}: ", err=True, nl=False)
    line = sys.stdin.readline()
    if not line:
        raise click.ClickException("no terminal to ask for the password on: give --password-stdin "
                                   "and the password as the first line of stdin")
    return line.rstrip("\r\n")


@user.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, type=click.Choice(ROLES), required=True,
              help="A role to grant; repeat for several.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@pass_ctx
@domain_errors
def user_add(ctx: Context, name: str, roles: tuple[str, ...], password_stdin: bool) -> None:
    """Create user NAME (or replace their password and roles)."""
    password = read_password(password_stdin)
    created = ctx.db.create_or_update_user(name, password, list(roles))
    click.echo(f"user {created.user_id} saved with roles {', '.join(created.roles)}")


@user.command("list")
@pass_ctx
@domain_errors
def user_list(ctx: Context) -> None:
    """List users and their roles (never passwords: only hashes are stored)."""
    for u in ctx.db.get_users():
        click.echo(f"{u.user_id}\t{','.join(u.roles)}")


@user.command("delete")
@click.argument("name")
@pass_ctx
@domain_errors
def user_delete(ctx: Context, name: str) -> None:
    """Delete user NAME, with their watches and those watches' delivery history."""
    watches = len(ctx.db.get_watches(name))
    ctx.db.delete_user(name)
    click.echo(f"user {name} deleted" + (f", with their {watches} watch(es)" if watches else ""))


@main.command("schema")
def schema() -> None:
    """Print the JSON Schema of the wire entities (docs/protocol.md, version 1)."""
    click.echo(json.dumps(wire_schema(), indent=2, sort_keys=True))


@main.command("serve")
@click.option("--host", default=None, help="Address to listen on [server.host].")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port to listen on; 0 picks a free one [server.port].")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Worker processes [server.workers].")
@pass_ctx
@domain_errors
def serve(ctx: Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the import service (gunicorn, gevent workers; HTTPS with server.tls_cert). Stop it with SIGTERM."""
    from .serving import run  # gunicorn and Flask load only when serving
    run(ctx.config, host, port, workers)
