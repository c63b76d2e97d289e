"""``meteorpi watch``: add, list, test, log, replay and delete watches from a terminal, with
one-line errors for bad input."""
from __future__ import annotations

import re

import pytest

from meteorpi_model.watch import Watch

from .export_fixtures import cli_env, meteorpi, wait_for
from .watch_fixtures import NotifierThread, Receiver, notify_config


def test_watch_add_list_test_log_replay_delete(db, vectors):
    db.create_or_update_user("alice", "alice-pw", ["user"])
    env = cli_env(db, METEORPI_NOTIFY_ALLOW_PRIVATE_TARGETS="true")
    receiver = Receiver()
    try:
        added = meteorpi("watch", "add", "fireballs", "--webhook", receiver.url, "--kind", "coincidence",
                         "--event-type", "meteorpi:*", "--meta", "magnitude<=-4", "--near", "52.2,0.12,400",
                         "--max-per-hour", "10", "--user", "alice", env=env)
        assert added.returncode == 0, added.stderr
        secret = added.stdout.split("verify webhooks): ")[1].split()[0]
        receiver.secrets.append(secret)
        listed = meteorpi("watch", "list", env=env)
        assert listed.stdout.startswith("fireballs\tcoincidence\twebhook ") and "\talice\tactive" in listed.stdout
        assert secret not in listed.stdout
        stored = db.watch_named("fireballs")
        assert [str(m) for m in stored.meta] == ["meteorpi:magnitude<=-4"] and stored.near.km == 400
        tested = meteorpi("watch", "test", "fireballs", env=env)
        assert tested.returncode == 0 and "queued as delivery" in tested.stdout
        notifier = NotifierThread(db, notify_config())
        try:
            wait_for(lambda: receiver.of_type("test"), 20, "the test notification")
            log = meteorpi("watch", "log", "fireballs", env=env)
            delivery_id = log.stdout.split("\t")[0]
            assert "\ttest\tdelivered\tattempts=1\tHTTP 200" in log.stdout
            replayed = meteorpi("watch", "replay", delivery_id, env=env)
            assert replayed.returncode == 0, replayed.stderr
            wait_for(lambda: len(receiver.of_type("test")) == 2, 20, "the replay")
        finally:
            notifier.close()
        assert receiver.ids[0] == receiver.ids[1]  # a replay is the same message (same webhook-id)
        deleted = meteorpi("watch", "delete", "fireballs", env=env)
        assert deleted.returncode == 0 and meteorpi("watch", "list", env=env).stdout == ""
    finally:
        receiver.close()


@pytest.mark.parametrize("args, message", [
    (["add", "w", "--email", "a@example.org", "--meta", "magnitude<<4", "--user", "alice"], "--meta[0]"),
    (["add", "w", "--email", "a@example.org", "--near", "52,0", "--user", "alice"], "--near"),
    (["add", "w", "--email", "a@example.org", "--kind", "absence", "--user", "alice"], "silent_hours"),
    (["add", "w", "--webhook", "http://10.0.0.1/x", "--user", "alice"], "non-public"),
    (["add", "w", "--webhook", "http://a..b/x", "--user", "alice"], "'a..b' is not a host name: it has an empty label"),
    (["add", "w", "--user", "alice"], "exactly one channel"),
    (["add", "w", "--email", "a@example.org", "--user", "nobody"], "no user 'nobody'"),
    (["delete", "nothing"], "no watch named 'nothing'"),
    (["replay", "999"], "no delivery 999"),
    (["add", "w", "--email", "a@example.org", "--meta", "<=4", "--user", "alice"], "--meta[0]"),  # no key
    (["add", "w", "--email", "x1:target@example.org", "--user", "alice"],
     "watch.email: 'x1:target@example.org' is not an address this archive mails"),  # mailed target@ before
    (["add", "w", "--email", "a(target@example.org"], "watch.email: 'a(target@example.org' is not an address"),
    (["add", "w", "--webhook", "https://example.org/h", "--silent-hours", "3", "--user", "alice"],
     "--silent-hours is for --kind absence"),  # was stored on an event watch and ignored
])
def test_bad_input_is_one_line_and_a_non_zero_exit(db, args, message):
    db.create_or_update_user("alice", "alice-pw", ["user"])
    done = meteorpi("watch", *args, env=cli_env(db))
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_name_several_owners_use_needs_an_owner_or_an_id(db):
    """Names are unique per owner, so the CLI must not guess whose watch NAME is."""
    for user in ("alice", "bob"):
        db.create_or_update_user(user, f"{user}-pw", ["user"])
        db.create_watch(Watch(name="shared", webhook="http://127.0.0.1:9/hook"), user)
    env = cli_env(db)
    for command in ("delete", "test", "log"):
        refused = meteorpi("watch", command, "shared", env=env)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "2 watches are named 'shared' (owners: alice, bob)" in refused.stderr and "--owner" in refused.stderr
    bobs = db.watch_named("shared", owner="bob")
    assert f"\t{bobs.watch_id.hex}" in meteorpi("watch", "list", env=env).stdout  # the id to give
    tested = meteorpi("watch", "test", bobs.watch_id.hex, env=env)
    assert tested.returncode == 0 and [e.kind for e in db.delivery_log(bobs.watch_id)] == ["test"], tested.stderr
    deleted = meteorpi("watch", "delete", "shared", "--owner", "alice", env=env)
    assert deleted.returncode == 0 and "watch shared of alice deleted" in deleted.stdout, deleted.stderr
    assert [w.owner for w in db.get_watches()] == ["bob"]
    assert meteorpi("watch", "delete", "shared", env=env).returncode == 0  # one left: the name is enough
    assert db.get_watches() == []


def test_an_email_owned_watch_is_added_unconfirmed_and_mails_its_link(db, smtp):
    box, port = smtp
    env = cli_env(db, METEORPI_NOTIFY_SMTP_HOST="127.0.0.1", METEORPI_NOTIFY_SMTP_PORT=str(port),
                  METEORPI_NOTIFY_BASE_URL="https://archive.example.org")
    added = meteorpi("watch", "add", "night-sky", "--email", "sky@example.org", env=env)
    assert added.returncode == 0, added.stderr
    assert "confirmation link sent to sky@example.org" in added.stdout
    (to, text), = box.messages
    link = re.search(r"https://archive\.example\.org/watches/([0-9a-f]{32})/confirm\?secret=(\S+)", text)
    assert to == ["sky@example.org"] and link and link.group(2) not in added.stdout
    assert "unconfirmed" in meteorpi("watch", "list", env=env).stdout
    assert not db.confirm_watch(link.group(1), "a-guess")
    assert db.confirm_watch(link.group(1), link.group(2))
    assert "\tactive" in meteorpi("watch", "list", env=env).stdout


def test_a_users_email_watch_from_the_cli_waits_for_its_link_unless_the_operator_vouches(db, smtp):
    """Finding 3 for the operator's CLI: `--user` no longer makes an address agree."""
    box, port = smtp
    db.create_or_update_user("alice", "alice-pw", ["user"])
    env = cli_env(db, METEORPI_NOTIFY_SMTP_HOST="127.0.0.1", METEORPI_NOTIFY_SMTP_PORT=str(port))
    added = meteorpi("watch", "add", "hers", "--email", "third-party@example.org", "--user", "alice", env=env)
    assert added.returncode == 0 and "confirmation link sent to third-party@example.org" in added.stdout, added.stderr
    assert [to for to, _ in box.messages] == [["third-party@example.org"]]
    assert "\talice\tunconfirmed\t" in meteorpi("watch", "list", env=env).stdout
    tested = meteorpi("watch", "test", "hers", env=env)
    assert tested.returncode == 1 and "is not confirmed yet" in tested.stderr
    again = meteorpi("watch", "add", "hers-2", "--email", "third-party@example.org", "--user", "alice", env=env)
    assert again.returncode == 1 and "is waiting to be opened" in again.stderr and len(box.messages) == 1
    vouched = meteorpi("watch", "add", "vouched", "--email", "agreed@example.org", "--user", "alice", "--confirmed",
                       env=env)
    assert vouched.returncode == 0 and "marked confirmed by the operator" in vouched.stdout, vouched.stderr
    assert db.watch_named("vouched").confirmed and len(box.messages) == 1  # no link mailed
    assert meteorpi("watch", "add", "x", "--webhook", "http://127.0.0.1:9/", "--confirmed", env=env).returncode == 2


def test_an_unreachable_mail_server_adds_no_watch(db):
    env = cli_env(db, METEORPI_NOTIFY_SMTP_HOST="127.0.0.1", METEORPI_NOTIFY_SMTP_PORT="9")
    added = meteorpi("watch", "add", "night-sky", "--email", "sky@example.org", env=env)
    assert added.returncode == 1 and "could not send the confirmation e-mail" in added.stderr
    assert db.get_watches() == []


def test_a_mail_server_refusing_the_address_adds_no_watch_and_holds_no_address(db, smtp):
    """Review finding: ``watch add --email`` caught only OSError, so a 550 to RCPT (the
    lasting notify.PermanentFailure) left the watch stored unconfirmed and its address held
    for a day. Now nothing stays, the error is one line naming the address and the code, and
    the address may be asked again at once."""
    box, port = smtp
    box.refuse["sky@example.org"] = "550 5.1.1 no such mailbox"
    env = cli_env(db, METEORPI_NOTIFY_SMTP_HOST="127.0.0.1", METEORPI_NOTIFY_SMTP_PORT=str(port))
    added = meteorpi("watch", "add", "night-sky", "--email", "sky@example.org", env=env)
    assert added.returncode == 1 and "Traceback" not in added.stderr, added.stderr
    assert added.stderr.strip() == ("Error: could not send the confirmation e-mail: the mail server refused "
                                    "sky@example.org (550); watch not added"), added.stderr
    assert db.get_watches() == [] and box.messages == []
    box.refuse.clear()
    again = meteorpi("watch", "add", "night-sky", "--email", "sky@example.org", env=env)
    assert again.returncode == 0, again.stderr
    assert [to for to, _ in box.messages] == [["sky@example.org"]]
