"""The entity cache behind ``cached_entity`` requests: recently received entities by id.

An exporter sends an event or file in full once; while it delivers the status and file bytes
the entity needs, it refers back to it by id only. This cache is what makes that work. It is a
bounded LRU (cachetools) behind a lock, one per worker process: a miss (evicted, restarted, or
the entity went to another worker) answers ``continue-nocache`` and the exporter resends the
entity in full, so several workers stay correct without sharing anything. A miss concerns its
own id alone: the reference design cleared the whole cache on one miss (docs/protocol.md weak point
1), which under load made every node resend everything.
"""
from __future__ import annotations

import threading
import uuid

from cachetools import LRUCache

from meteorpi_model import Event, FileRecord

Entity = Event | FileRecord


class EntityCache:
    """Thread-safe LRU of at most ``maxsize`` entities keyed by their id; 0 holds nothing."""

    def __init__(self, maxsize: int):
        self.maxsize = max(0, int(maxsize))
        self._entries: LRUCache = LRUCache(maxsize=max(1, self.maxsize))
        self._lock = threading.Lock()

    def put(self, entity_id: uuid.UUID, entity: Entity) -> None:
        """Remember ``entity`` (the least recently used one leaves when full)."""
        if self.maxsize == 0:
            return
        with self._lock:
            self._entries[entity_id] = entity

    def get(self, entity_id: uuid.UUID) -> Entity | None:
        """The entity with this id, or None; a hit makes it the most recently used."""
        with self._lock:
            return self._entries.get(entity_id)

    def clear(self) -> None:
        """Forget everything (tests; an operator's reset). Never called on a miss."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, entity_id: object) -> bool:
        with self._lock:
            return entity_id in self._entries
