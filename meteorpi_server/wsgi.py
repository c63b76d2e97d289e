"""WSGI entry for servers other than ``meteorpi serve``: ``meteorpi_server.wsgi:app``.

The configuration comes from ``METEORPI_CONFIG`` and ``METEORPI_*`` variables; the database is
opened at the first request in each process, so a pre-forking server may import this in its
master safely.
"""
from .app import create_app

app = create_app()
