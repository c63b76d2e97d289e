"""Exceptions raised by meteorpi_export, the node's exporter.

    MeteorpiError                     (meteorpi_model) root of everything meteorpi raises
    └── ExportError                   the exporter cannot run as asked
        └── ExporterBusy              another exporter is already sending this node's exports

How one task or batch ended (complete, failed, confused) is not an exception to the caller:
it is a ``TaskReport``. Inside an exchange, ``link.TaskEnded`` carries it to the exporter.
Storage errors (``meteorpi_db.DatabaseError``) pass through unchanged.
"""
from meteorpi_model.errors import MeteorpiError


class ExportError(MeteorpiError):
    """Root of meteorpi_export's exceptions."""


class ExporterBusy(ExportError):
    """Another exporter holds this node's export lock: one at a time, or every task goes twice."""
