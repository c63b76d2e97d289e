"""A test client of GET /feed/stream, reading Server-Sent Events in a thread as EventSource does."""
from __future__ import annotations

import json
import threading

import requests

from .server_fixtures import READER, TIMEOUT


class StreamClient:
    """An EventSource-like reader of /feed/stream in a thread: item ids in arrival order."""

    def __init__(self, url: str, after: str | None = None):
        self.items: list[dict] = []
        self.up_to_date = threading.Event()
        self.done = threading.Event()
        params = {"after": after} if after else {}
        self.response = requests.get(url + "/feed/stream", params=params, auth=READER, stream=True,
                                     timeout=TIMEOUT)
        assert self.response.status_code == 200
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        event: dict = {}
        try:
            for line in self.response.iter_lines(chunk_size=1, decode_unicode=True):
                if line == "":
                    if "id" in event:
                        self.items.append(json.loads(event["data"]))
                    elif event.get("event") == "up-to-date":
                        self.up_to_date.set()
                    event = {}
                elif not line.startswith(":"):
                    key, _, value = line.partition(":")
                    event[key] = value.lstrip(" ")
        except (requests.RequestException, OSError, AttributeError):
            pass  # closed: by the test, or by a server that went away (http.client drops its fp)
        finally:
            self.done.set()

    def close(self) -> None:
        self.response.close()
