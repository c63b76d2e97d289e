"""meteorpi_export: the camera node's exporter, the client half of docs/protocol.md.

It takes due tasks from the export queue (meteorpi_db), sends their entities to each
configuration's target over HTTP (requests) and writes the outcome back. A package of its own,
beside meteorpi_db and meteorpi_server, because it is neither: storage imports no HTTP library,
and the archive's server needs nothing of the node's client (the ``meteorpi export`` commands
import it).

    exporter.py      MeteorExporter: which tasks go when, outcomes recorded, failures deferred
    link.py          Link (what an exchange uses of the exporter) and Conversation (its requests)
    protocol_v1.py   version 1: one entity per request, as every deployed server speaks it
    protocol_v2.py   version 2, the fast path: a batch in a handful of requests
    uploads.py       version 2's upload bodies and their size, adapted to the link
    lock.py          one exporter per node
    errors.py        ExportError, ExporterBusy
"""
from .errors import ExportError, ExporterBusy
from .exporter import ExportTotals, MeteorExporter, TaskReport
from .link import ExportState
from .lock import exporter_lock

__all__ = ["ExportError", "ExportState", "ExportTotals", "ExporterBusy", "MeteorExporter", "TaskReport",
           "exporter_lock"]
