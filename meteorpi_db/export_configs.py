"""Export configurations: what a node sends where, and as whom.

A configuration names a target ``/import`` URL, the credentials to use there, a type (events or
stand-alone files) and a search. Marking (export_marking.py) turns what matches into tasks of
the export queue (export_queue.py).

The password must be kept in clear to authenticate at the target, so it lives in the database
(whose files are readable by their owner only) and never leaves this module in a ``repr``,
a log line or an exception message.
"""
from __future__ import annotations

import uuid

import psycopg2.errors
from psycopg2.extras import Json

from meteorpi_model import ExportConfiguration, ValidationError, as_uuid

from .errors import Conflict, NotFound
from .pool import retry_stale

CONFIG_COLUMNS = """config_id, name, description, target_url, user_id, password, export_type, search,
    enabled"""
INSERT_CONFIG = f"""
INSERT INTO export_config ({CONFIG_COLUMNS})
VALUES (%(config_id)s, %(name)s, %(description)s, %(target_url)s, %(user_id)s, %(password)s,
        %(export_type)s, %(search)s, %(enabled)s)
ON CONFLICT DO NOTHING
"""
SELECT_CONFIG_BY_ID = f"SELECT {CONFIG_COLUMNS} FROM export_config WHERE config_id = %(config_id)s"
SELECT_CONFIG_BY_NAME = f"SELECT {CONFIG_COLUMNS} FROM export_config WHERE name = %(name)s"
SELECT_CONFIGS = f"SELECT {CONFIG_COLUMNS} FROM export_config ORDER BY name"
# A new search or type may match entities marked past already: start marking from the beginning
# (tasks already made stay; ON CONFLICT keeps them single).
UPDATE_CONFIG = """
UPDATE export_config SET name = %(name)s, description = %(description)s, target_url = %(target_url)s,
    user_id = %(user_id)s, password = %(password)s, export_type = %(export_type)s,
    search = %(search)s, enabled = %(enabled)s,
    high_water_seq = CASE WHEN search = %(search)s AND export_type = %(export_type)s
                          THEN high_water_seq ELSE 0 END
WHERE config_id = %(config_id)s
"""
DROP_OTHER_TYPE_TASKS = """
DELETE FROM export_task WHERE config_id = %(config_id)s AND state = 'pending' AND entity_type <> %(export_type)s
"""
# Enabling again starts a fresh failure count.
SET_ENABLED = """
UPDATE export_config SET enabled = %(enabled)s,
    consecutive_failures = CASE WHEN %(enabled)s THEN 0 ELSE consecutive_failures END
WHERE name = %(name)s
"""
DELETE_CONFIG = "DELETE FROM export_config WHERE name = %(name)s"


def config_from_row(row) -> ExportConfiguration:
    config_id, name, description, target_url, user_id, password, export_type, search, enabled = row
    return ExportConfiguration.from_dict(
        {"config_id": config_id.hex, "name": name, "description": description, "target_url": target_url,
         "user_id": user_id, "password": password, "type": export_type, "search": search,
         "enabled": enabled}, "export")


def _config_params(config: ExportConfiguration) -> dict:
    return {"config_id": config.config_id, "name": config.name, "description": config.description,
            "target_url": config.target_url, "user_id": config.user_id, "password": config.password,
            "export_type": config.type, "search": Json(config.search.as_dict()), "enabled": config.enabled}


def _checked(config: ExportConfiguration) -> ExportConfiguration:
    """``config`` validated by the wire rules, its search of the class its type needs."""
    if not isinstance(config, ExportConfiguration):
        raise ValidationError("export", f"expected an ExportConfiguration, got {type(config).__name__}")
    return ExportConfiguration.from_dict(config.as_dict(), "export")


def find_export_config(cur, name_or_id: str | uuid.UUID) -> ExportConfiguration:
    """The configuration with this id or name, read with ``cur``; NotFound when there is none."""
    row = None
    if isinstance(name_or_id, uuid.UUID) or (isinstance(name_or_id, str) and len(name_or_id) in (32, 36)):
        try:
            cur.execute(SELECT_CONFIG_BY_ID, {"config_id": as_uuid(name_or_id)})
            row = cur.fetchone()
        except ValidationError:
            row = None
    if row is None and isinstance(name_or_id, str):
        cur.execute(SELECT_CONFIG_BY_NAME, {"name": name_or_id})
        row = cur.fetchone()
    if row is None:
        raise NotFound(f"no export configuration {str(name_or_id)!r} (see `meteorpi export list`)")
    return config_from_row(row)


class ExportConfigStore:
    """Mixed into MeteorDatabase: export configurations."""

    @retry_stale
    def create_export_configuration(self, config: ExportConfiguration) -> ExportConfiguration:
        """Store a new configuration; Conflict when its name (or id) is taken."""
        config = _checked(config)
        with self.transaction() as cur:
            cur.execute(INSERT_CONFIG, _config_params(config))
            if cur.rowcount == 0:
                raise Conflict(f"an export configuration named {config.name!r} already exists")
        return config

    @retry_stale
    def get_export_configuration(self, name_or_id: str | uuid.UUID) -> ExportConfiguration:
        """The configuration with this id or name; NotFound when there is none."""
        with self.transaction() as cur:
            return find_export_config(cur, name_or_id)

    @retry_stale
    def get_export_configurations(self) -> list[ExportConfiguration]:
        """Every configuration, by name."""
        with self.transaction() as cur:
            cur.execute(SELECT_CONFIGS)
            return [config_from_row(row) for row in cur.fetchall()]

    @retry_stale
    def update_export_configuration(self, config: ExportConfiguration) -> ExportConfiguration:
        """Replace a configuration (found by config_id). A changed search or type is applied to
        entities marked before too; pending tasks of the other type are dropped."""
        config = _checked(config)
        with self.transaction() as cur:
            try:
                cur.execute(UPDATE_CONFIG, _config_params(config))
            except psycopg2.errors.UniqueViolation as e:
                raise Conflict(f"an export configuration named {config.name!r} already exists", e) from None
            if cur.rowcount == 0:
                raise NotFound(f"no export configuration with id {config.config_id.hex}")
            cur.execute(DROP_OTHER_TYPE_TASKS, {"config_id": config.config_id, "export_type": config.type})
        return config

    @retry_stale
    def set_export_enabled(self, name: str, enabled: bool) -> None:
        """Enable (with a fresh failure count) or disable the configuration ``name``."""
        with self.transaction() as cur:
            cur.execute(SET_ENABLED, {"name": name, "enabled": bool(enabled)})
            if cur.rowcount == 0:
                raise NotFound(f"no export configuration {name!r} (see `meteorpi export list`)")

    @retry_stale
    def delete_export_configuration(self, name: str) -> None:
        """Remove the configuration ``name`` and its tasks."""
        with self.transaction() as cur:
            cur.execute(DELETE_CONFIG, {"name": name})
            if cur.rowcount == 0:
                raise NotFound(f"no export configuration {name!r} (see `meteorpi export list`)")
