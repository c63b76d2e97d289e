"""meteorpi_server: the import service (Flask) that receives what camera nodes export.

``create_app(config, db)`` builds the service; ``MeteorApp`` and ``add_routes`` embed the import
API in another Flask application with a receiver of its own (``BaseImportReceiver``).
``meteorpi serve`` (serving.py) runs it under gunicorn; ``meteorpi_server.wsgi:app`` is the
WSGI entry for other servers.
"""
from .app import MeteorApp, create_app
from .errors import ApiError, BadRequest, CallbackRefused, PayloadTooLarge, ResourceNotFound
from .import_routes import add_routes
from .importer_api import BaseImportReceiver, ImportRequest, MeteorDatabaseImportReceiver

__all__ = ["ApiError", "BadRequest", "BaseImportReceiver", "CallbackRefused", "ImportRequest",
           "MeteorApp", "MeteorDatabaseImportReceiver", "PayloadTooLarge", "ResourceNotFound",
           "add_routes", "create_app"]
