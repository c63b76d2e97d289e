"""Searches over files and events (placeholder)."""


class SearchStore:
    """Mixed into MeteorDatabase: search_files and search_events."""
