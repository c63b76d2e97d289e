"""meteorpi_rms: ingest what the Global Meteor Network's RMS software records.

Point ``ingest_paths`` (or ``meteorpi ingest rms``) at a night folder or at RMS's data folder:
every finished night becomes a camera status, files and one ``meteorpi:meteor`` event per
detection, registered in one transaction with ids derived from the data, so a repeat or a
copy registers nothing new. Depends on meteorpi_model and meteorpi_db only.

Modules: ``names`` (what file names say), ``files`` (regular files only), ``config`` (.config and platepars),
``ftpdetectinfo`` (the detections), ``night`` (finding nights, finished or not), ``ids``,
``ingest`` (what becomes what, and the registration), ``follow`` (polling beside RMS).
"""
from .errors import FormatError, NightInProgress, NightVanished, NotRegularFile, RmsError
from .ingest import EVENT_TYPE, NightResult, ingest_night, ingest_paths

__all__ = ["EVENT_TYPE", "FormatError", "NightInProgress", "NightResult", "NightVanished", "NotRegularFile", "RmsError",
           "ingest_night", "ingest_paths"]
