"""Export configurations and the export queue (placeholder)."""


class ExportStore:
    """Mixed into MeteorDatabase: export configurations and tasks."""
