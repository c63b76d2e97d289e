"""Ids derived from the data itself, never from where a folder sits or what it is called.

Each id is a name-based UUID (version 5) under meteorpi's RMS namespace, so ingesting a night
twice, or a copy of it under another folder name, maps every entity to the id it already has;
an RMS re-run that changed a file changes its MD5, hence its id, and the new version is kept
beside the old one.
"""
from __future__ import annotations

import uuid

NAMESPACE = uuid.UUID("6d2f6a4e-3b1c-5e0a-9f57-52a1c0d4e7b3")  # fixed forever: ids depend on it


def _id(kind: str, *parts: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, "\x1f".join((kind, *parts)))


def file_id(station: str, night: str, file_name: str, md5: str) -> uuid.UUID:
    """A file of a night: its station, the night named in the file names, its name and bytes."""
    return _id("file", station, night, file_name, md5.lower())


def event_id(station: str, ff_name: str, meteor_number: int, content_hash: str) -> uuid.UUID:
    """A detection: station, its FF, meteor number and its rows' content. Not its files: RMS
    deletes FF files of unconfirmed detections, and a night ingested before and after that
    is still the same detection (a changed FF is kept beside the old one as a file)."""
    return _id("event", station, ff_name, str(meteor_number), content_hash)


def status_id(station: str, content: str, night: str | None = None) -> uuid.UUID:
    """A configuration (position and pointing) of a station; ``night`` only when the same
    configuration must start again at an earlier night (see ingest.choose_status)."""
    return _id("status", station, content, *([night] if night else []))
