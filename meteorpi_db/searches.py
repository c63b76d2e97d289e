"""Searches over files and events: one query builder, two entity families.

A search becomes one SELECT over the entity's table joined to the camera status it refers to.
Every condition is a fixed fragment below with named parameters; only the table and column
names vary between files and events, and those come from ``_Family`` through ``sql.Identifier``.
No value is ever formatted into SQL.
"""
from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql

from meteorpi_model import EventSearch, FileRecordSearch, NSString, ValidationError

from .pool import retry_stale

# One page of ids plus the total number matching (limit/skip ignored); LIMIT NULL is no limit.
SELECT_PAGE = """
SELECT r.{id}, count(*) OVER ()
FROM {table} r JOIN camera_status s ON s.status_id = r.status_id
WHERE {where}
ORDER BY r.{time}, r.{id}
LIMIT %(limit)s OFFSET %(skip)s
"""
# Only needed when the page is empty because skip went past the end.
SELECT_COUNT = """
SELECT count(*)
FROM {table} r JOIN camera_status s ON s.status_id = r.status_id
WHERE {where}
"""

# Search field -> condition, applied when the field is not None. A family only meets the
# fields its search class has (files have no event_type, events no mime_type).
FIELD_CONDITIONS = {
    "camera_ids": "r.camera_id = ANY(%(camera_ids)s)",
    "lat_min": "s.lat >= %(lat_min)s",
    "lat_max": "s.lat <= %(lat_max)s",
    "long_min": "s.long >= %(long_min)s",
    "long_max": "s.long <= %(long_max)s",
    "after": "r.{time} >= %(after)s",
    "before": "r.{time} < %(before)s",
    "after_offset": "r.{offset} >= %(after_offset)s",
    "before_offset": "r.{offset} < %(before_offset)s",
    "event_type": "r.event_type = %(event_type)s",
    "semantic_type": "r.semantic_type = %(semantic_type)s",
    "mime_type": "r.mime_type = %(mime_type)s",
}
# Search flag -> condition, applied when the flag is True.
FLAG_CONDITIONS = {
    "exclude_imported": "NOT EXISTS (SELECT 1 FROM import_record i WHERE i.entity_id = r.{id})",
    "exclude_events": "NOT EXISTS (SELECT 1 FROM event_file ef WHERE ef.file_id = r.{id})",
}
# Meta constraint type -> test on the meta row; {v} is the constraint's value parameter.
META_TESTS = {
    "before": "m.date_value < {v}",
    "after": "m.date_value > {v}",
    "less": "m.number_value < {v}",
    "greater": "m.number_value > {v}",
    "number_equals": "m.number_value = {v}",
    "string_equals": "m.string_value = {v}",
    # strpos, not LIKE: '%' and '_' in the searched text are plain characters.
    "contains": "strpos(m.string_value, {v}) > 0",
}
META_EXISTS = """EXISTS (SELECT 1 FROM {meta} m
        WHERE m.{id} = r.{id} AND m.meta_key = {k} AND {test})"""


@dataclass(frozen=True)
class _Family:
    """The table and column names of one searchable entity family."""
    table: str
    id: str
    time: str
    offset: str
    meta: str

    def names(self) -> dict:
        return {k: sql.Identifier(v) for k, v in vars(self).items()}


FILES = _Family(table="file_record", id="file_id", time="file_time", offset="file_offset",
                meta="file_meta")
EVENTS = _Family(table="event", id="event_id", time="event_time", offset="event_offset",
                 meta="event_meta")


def _param(value):
    if isinstance(value, NSString):
        return str(value)
    return value


def search_where(family: _Family, search) -> tuple[sql.Composable, dict]:
    """The WHERE clause of ``search`` and its parameters."""
    names = family.names()
    conditions, params = [], {}
    for name, fragment in FIELD_CONDITIONS.items():
        value = getattr(search, name, None)
        if value is not None:
            conditions.append(sql.SQL(fragment).format(**names))
            params[name] = _param(value)
    for name, fragment in FLAG_CONDITIONS.items():
        if getattr(search, name, None):
            conditions.append(sql.SQL(fragment).format(**names))
    for i, constraint in enumerate(search.meta_constraints):
        key, value = f"meta_key_{i}", f"meta_value_{i}"
        test = sql.SQL(META_TESTS[constraint.constraint_type]).format(v=sql.Placeholder(value))
        conditions.append(sql.SQL(META_EXISTS).format(test=test, k=sql.Placeholder(key), **names))
        params[key], params[value] = str(constraint.key), _param(constraint.value)
    if not conditions:
        conditions.append(sql.SQL("TRUE"))
    return sql.SQL("\n  AND ").join(conditions), params


def _checked(cls, search):
    """``search`` validated and normalised by the wire rules (a Python-built search may hold a
    meta date as milliseconds, or a str where an NSString belongs)."""
    if not isinstance(search, cls):
        raise ValidationError("search", f"expected a {cls.__name__}, got {type(search).__name__}")
    return cls.from_dict(search.as_dict())


def _search_ids(cur, family: _Family, search) -> tuple[int, list]:
    """(total matching, ids of the requested page in time order)."""
    where, params = search_where(family, search)
    names = family.names()
    params.update(limit=search.limit or None, skip=search.skip)
    cur.execute(sql.SQL(SELECT_PAGE).format(where=where, **names), params)
    rows = cur.fetchall()
    if rows:
        return rows[0][1], [row[0] for row in rows]
    if not search.skip:
        return 0, []
    cur.execute(sql.SQL(SELECT_COUNT).format(where=where, **names), params)
    return cur.fetchone()[0], []


class SearchStore:
    """Mixed into MeteorDatabase: search_files and search_events."""

    @retry_stale
    def search_files(self, search: FileRecordSearch) -> dict:
        """``{"count": total matching, "files": [FileRecord]}``: one page, ordered by file_time."""
        search = _checked(FileRecordSearch, search)
        with self.transaction() as cur:
            count, ids = _search_ids(cur, FILES, search)
            return {"count": count, "files": self._load_files(cur, ids)}

    @retry_stale
    def search_events(self, search: EventSearch) -> dict:
        """``{"count": total matching, "events": [Event]}``: one page, ordered by event_time."""
        search = _checked(EventSearch, search)
        with self.transaction() as cur:
            count, ids = _search_ids(cur, EVENTS, search)
            return {"count": count, "events": self._load_events(cur, ids)}
