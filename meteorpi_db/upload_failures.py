"""Refused uploads, counted per file, MD5 and importing account.

A node whose upload of a file keeps being refused (bytes that do not match their MD5, bytes
over the size limit, a body cut short) would otherwise be asked for the same bytes for ever: the
import service refuses the file's entity once the count reaches ``server.max_failed_uploads``
(docs/protocol.md weak point 3). The count is kept in PostgreSQL, so every worker sees it, and per
importing account, so one account's bad uploads never get another node's file refused. A
verified upload of the file, by anyone, forgets every count of it.
"""
from __future__ import annotations

import uuid
from typing import Iterable

from meteorpi_model import as_uuid

from .pool import retry_stale

RECORD_UPLOAD_FAILURE = """
INSERT INTO upload_failure (file_id, md5, user_id, failures) VALUES (%(file_id)s, %(md5)s, %(user_id)s, 1)
ON CONFLICT (file_id, md5, user_id) DO UPDATE SET failures = upload_failure.failures + 1, last_at = now()
RETURNING failures
"""
SELECT_UPLOAD_FAILURES = """
SELECT failures FROM upload_failure WHERE file_id = %(file_id)s AND md5 = %(md5)s AND user_id = %(user_id)s
"""
SELECT_UPLOAD_FAILURE_COUNTS = """
SELECT f.file_id, f.failures
FROM upload_failure f JOIN unnest(%(ids)s::uuid[], %(md5s)s::text[]) AS wanted (file_id, md5)
  ON f.file_id = wanted.file_id AND f.md5 = wanted.md5
WHERE f.user_id = %(user_id)s
"""
CLEAR_UPLOAD_FAILURES = "DELETE FROM upload_failure WHERE file_id = ANY(%(ids)s)"


def _account(user_id: str | None) -> str:
    """The key of an importing account ("" when an embedding application has no login)."""
    return user_id or ""


def refused_too_often(file_id: uuid.UUID, md5: str, count: int) -> str:
    """Why a file's entity is refused once ``count`` uploads of its bytes were."""
    return (f"file {file_id.hex}: {count} uploads of its bytes (MD5 {md5.lower()}) were refused (not matching "
            "the MD5, over the size limit, or a malformed body); check its bytes on the camera node")


class UploadFailureStore:
    """Mixed into MeteorDatabase: counts of refused uploads."""

    def _add_upload_failure(self, cur, file_id: uuid.UUID, md5: str, user_id: str | None) -> int:
        cur.execute(RECORD_UPLOAD_FAILURE, {"file_id": file_id, "md5": md5.lower(), "user_id": _account(user_id)})
        return cur.fetchone()[0]

    def _upload_failures(self, cur, file_id: uuid.UUID, md5: str, user_id: str | None) -> int:
        cur.execute(SELECT_UPLOAD_FAILURES, {"file_id": file_id, "md5": md5.lower(), "user_id": _account(user_id)})
        row = cur.fetchone()
        return row[0] if row else 0

    @retry_stale
    def record_upload_failure(self, file_id, md5: str, user_id: str | None) -> int:
        """Count one more refused upload of ``file_id`` with ``md5`` by ``user_id``; the total."""
        with self.transaction() as cur:
            return self._add_upload_failure(cur, as_uuid(file_id), md5, user_id)

    @retry_stale
    def upload_failures(self, file_id, md5: str, user_id: str | None) -> int:
        """Refused uploads of ``file_id`` with ``md5`` by ``user_id`` since the file's last success."""
        with self.transaction() as cur:
            return self._upload_failures(cur, as_uuid(file_id), md5, user_id)

    @retry_stale
    def upload_failure_counts(self, files: Iterable[tuple[uuid.UUID, str]], user_id: str | None) -> dict[uuid.UUID, int]:
        """``upload_failures`` of many (file_id, md5) at once: {file_id: count} for those with any."""
        files = list(files)
        if not files:
            return {}
        with self.transaction() as cur:
            cur.execute(SELECT_UPLOAD_FAILURE_COUNTS, {"ids": [f for f, _ in files], "md5s": [m.lower() for _, m in files],
                                                       "user_id": _account(user_id)})
            return dict(cur.fetchall())

    @retry_stale
    def clear_upload_failures(self, *file_ids) -> None:
        """Forget every refused upload of these files, by any account (their bytes are held now)."""
        if not file_ids:
            return
        with self.transaction() as cur:
            cur.execute(CLEAR_UPLOAD_FAILURES, {"ids": [as_uuid(f) for f in file_ids]})
