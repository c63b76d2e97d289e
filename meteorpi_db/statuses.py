"""Camera statuses (placeholder: filled in by the statuses work)."""


class StatusStore:
    """Mixed into MeteorDatabase: camera statuses and their visible regions."""
