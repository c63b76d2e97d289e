"""Migrations 005-007 on an archive that already holds watches: what the fixes do to the rows
made under the old rules (global names, hashes cleared on confirmation, users' e-mail watches
confirmed at once, unconfirmed watches kept forever)."""
from __future__ import annotations

import contextlib
import uuid
from typing import Callable, Iterator


from meteorpi_db.migrations import RECORD_VERSION, available, migrate
from meteorpi_db.pool import ConnectionPool
from meteorpi_db.watches import PURGE_PENDING, PURGE_UNCONFIRMED

LEGACY = """
INSERT INTO app_user (user_id, password_hash) VALUES ('alice', 'x');
INSERT INTO watch (watch_id, name, owner_user, owner_email, kind, email, webhook_url, webhook_secret, filters,
                   max_per_hour, confirm_hash, created_at) VALUES
  ('00000000000000000000000000000001', 'users-mail', 'alice', NULL, 'event', 'third@example.org', NULL, NULL,
   '{}', 60, NULL, now()),
  ('00000000000000000000000000000002', 'users-hook', 'alice', NULL, 'event', NULL, 'https://example.org/h',
   'whsec_x', '{}', 60, NULL, now()),
  ('00000000000000000000000000000003', 'old', NULL, 'Old@example.org', 'event', 'Old@example.org', NULL, NULL,
   '{}', 60, '\\x00', now() - interval '3 days'),
  ('00000000000000000000000000000004', 'recent', NULL, 'new@example.org', 'event', 'new@example.org', NULL, NULL,
   '{}', 60, '\\x00', now() - interval '1 hour'),
  ('00000000000000000000000000000005', 'agreed', NULL, 'yes@example.org', 'event', 'yes@example.org', NULL, NULL,
   '{}', 60, NULL, now());
"""


@contextlib.contextmanager
def migrated_to(pg_server, version: int, fill: Callable) -> Iterator[ConnectionPool]:
    """A fresh database with migrations up to ``version`` applied and ``fill(cur)`` run on it:
    an archive as it stood then, for the later migrations to be tried on. Dropped afterwards."""
    from tests.conftest import database_url, drop_database
    admin_url, _ = pg_server
    name = f"watch_migration_{uuid.uuid4().hex[:8]}"
    pool = ConnectionPool(database_url(admin_url, name))
    try:
        with pool.transaction() as cur:
            cur.execute("CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL, "
                        "applied_at timestamptz NOT NULL DEFAULT now())")
            for number, migration, sql in available():
                if number <= version:
                    cur.execute(sql)
                    cur.execute(RECORD_VERSION, {"version": number, "name": migration})
            fill(cur)
        yield pool
    finally:
        pool.close()
        drop_database(admin_url, name)


def test_old_watches_are_brought_under_the_new_rules(pg_server):
    with migrated_to(pg_server, 4, lambda cur: cur.execute(LEGACY)) as pool:
        assert migrate(pool) >= 7
        with pool.transaction() as cur:
            cur.execute("SELECT name, enabled, disabled_reason IS NOT NULL, confirmed_at IS NOT NULL, "
                        "confirm_expires IS NOT NULL FROM watch ORDER BY watch_id")
            assert cur.fetchall() == [
                ("users-mail", False, True, True, False),  # never asked its address: stopped
                ("users-hook", True, False, True, False),
                ("old", True, False, False, True),
                ("recent", True, False, False, True),
                ("agreed", True, False, True, False)]
            cur.execute("SELECT address, watch_id::text FROM confirmation_pending ORDER BY address")
            assert cur.fetchall() == [("new@example.org", "00000000-0000-0000-0000-000000000004"),
                                      ("old@example.org", "00000000-0000-0000-0000-000000000003")]
            cur.execute(PURGE_UNCONFIRMED)  # the 3-day-old link had expired
            cur.execute(PURGE_PENDING)
            cur.execute("SELECT name FROM watch WHERE confirmed_at IS NULL")
            assert cur.fetchall() == [("recent",)]
            cur.execute("SELECT address FROM confirmation_pending")
            assert cur.fetchall() == [("new@example.org",)]
            # Names are per owner now: alice may reuse another owner's name, not her own.
            cur.execute("INSERT INTO watch (watch_id, name, owner_user, kind, webhook_url, webhook_secret, filters, "
                        "max_per_hour, confirmed_at) VALUES (gen_random_uuid(), 'agreed', 'alice', 'event', "
                        "'https://example.org/h', 'whsec_x', '{}', 60, now())")


def test_watches_stored_with_an_address_the_plain_rule_refuses_stop_and_are_still_read(pg_server):
    """Review finding (e-mail check): the older rule took addresses a mailer reads as another
    (``x1:target@example.org``), so an archive may hold such watches. Migration 008 disables
    exactly those the model's rule refuses (its SQL expression and ``email_refusal`` must agree),
    saying why, and every stored row is still read, with its own address, so listing, deleting
    and matching never fail on one."""
    from meteorpi_db.watches import WATCH_COLUMNS, watch_from_row
    from meteorpi_model.watch import email_refusal
    from tests.test_model import MALFORMED_ADDRESSES, MISREAD_ADDRESSES, PLAIN_ADDRESSES
    # The older rule kept the 254-character limit (as the owner column's reader still does).
    addresses = [a for a in MISREAD_ADDRESSES + MALFORMED_ADDRESSES + PLAIN_ADDRESSES if len(a) <= 254]

    def fill(cur) -> None:
        for i, address in enumerate(addresses):
            cur.execute("INSERT INTO watch (watch_id, name, owner_email, kind, email, filters, max_per_hour, "
                        "confirmed_at) VALUES (gen_random_uuid(), %(name)s, %(address)s, 'event', %(address)s, "
                        "'{}', 60, now())", {"name": f"w{i}", "address": address})
    with migrated_to(pg_server, 7, fill) as pool:
        assert migrate(pool) >= 8
        with pool.transaction() as cur:
            cur.execute("SELECT email, enabled, disabled_reason FROM watch")
            rows = cur.fetchall()
            cur.execute(f"SELECT {WATCH_COLUMNS} FROM watch ORDER BY name")
            read = [watch_from_row(row) for row in cur.fetchall()]
        stopped = {email for email, enabled, _ in rows if not enabled}
        assert stopped == {a for a in addresses if email_refusal(a)}, stopped ^ {a for a in addresses if email_refusal(a)}
        assert stopped >= set(MISREAD_ADDRESSES) and not stopped & set(PLAIN_ADDRESSES)
        assert all("not one this archive mails" in reason for email, _, reason in rows if email in stopped)
        assert sorted(w.email for w in read) == sorted(addresses)  # read back as stored, none refused
        assert {w.email for w in read if not w.enabled} == stopped
