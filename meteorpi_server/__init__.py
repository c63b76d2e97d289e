"""meteorpi_server: the import service (Flask) that receives what camera nodes export.

``create_app(config, db)`` builds the service; ``MeteorApp`` and ``add_routes`` embed the import
API in another Flask application with a receiver of its own (``BaseImportReceiver``).
``meteorpi serve`` (serving.py) runs it under gunicorn; ``meteorpi_server.wsgi:app`` is the
WSGI entry for other servers.
"""
import importlib

# Imported on first use (PEP 562): `meteorpi export run` and other CLI calls that never serve
# should not pay for importing Flask and the app (a camera node runs them every few minutes).
_EXPORTS = {"MeteorApp": "app", "create_app": "app", "ApiError": "errors", "BadRequest": "errors",
            "CallbackRefused": "errors", "PayloadTooLarge": "errors", "ResourceNotFound": "errors",
            "add_routes": "import_routes", "BaseImportReceiver": "importer_api",
            "ImportRequest": "importer_api", "MeteorDatabaseImportReceiver": "importer_api",
            "FileData": "file_data"}

__all__ = ["ApiError", "BadRequest", "BaseImportReceiver", "CallbackRefused", "FileData", "ImportRequest",
           "MeteorApp", "MeteorDatabaseImportReceiver", "PayloadTooLarge", "ResourceNotFound",
           "add_routes", "create_app"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
