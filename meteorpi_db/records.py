"""File records and events (placeholder)."""


class RecordStore:
    """Mixed into MeteorDatabase: files, events, their metadata and imports."""
