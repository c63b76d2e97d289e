"""``meteorpi watch ...`` (watches and their deliveries) and ``meteorpi notify`` (the notifier
alone). Thin: parse, call the database or the notifier, print one line per thing.

Watch names are unique per owner, not across the archive, so ``delete``, ``test`` and ``log``
take a name *or* a watch id (``watch list`` shows both), and ``--owner`` (a user id or, for a
watch without one, its address) when several owners use the name: guessing which one an
operator meant could delete or test somebody else's watch.
"""
from __future__ import annotations

import uuid

import click

from meteorpi_db import MeteorDatabase
from meteorpi_model.watch import WATCH_KINDS, Near, Watch, WatchMeta

from .cli import Context, domain_errors, pass_ctx

OWNER_OPTION = click.option("--owner", help="The owner (user id, or the address of a watch without one) "
                                            "when several owners have a watch of that name.")


def find_watch(db: MeteorDatabase, ref: str, owner: str | None) -> Watch:
    """The watch ``ref`` names: its id (32 hex digits, as ``watch list`` shows), else its name
    (of ``owner``). A name several owners use is refused with a one-line error asking for
    ``--owner`` or the id, never resolved by guessing."""
    try:
        by_id = db.get_watch(uuid.UUID(hex=ref)) if len(ref) == 32 else None
    except ValueError:
        by_id = None
    if by_id is not None and (owner is None or str(by_id.owner).lower() == owner.lower()):
        return by_id
    found = db.watches_named(ref, owner)
    if not found:
        raise click.ClickException(f"no watch named {ref!r}" + (f" owned by {owner!r}" if owner else ""))
    if len(found) > 1:
        owners = ", ".join(str(w.owner) for w in found)
        raise click.ClickException(f"{len(found)} watches are named {ref!r} (owners: {owners}); "
                                   f"give --owner OWNER or the watch's id (see `meteorpi watch list`)")
    return found[0]


@click.group()
def watch() -> None:
    """Watches: be told (webhook or e-mail) of events, coincidences and silent cameras."""


@watch.command("add")
@click.argument("name")
@click.option("--webhook", help="URL that receives signed POSTs (Standard Webhooks).")
@click.option("--email", help="Address that receives notifications.")
@click.option("--kind", type=click.Choice(WATCH_KINDS), default="event", show_default=True)
@click.option("--event-type", "event_types", multiple=True, help="Event type, * wildcards (meteorpi:*); repeatable.")
@click.option("--camera", "cameras", multiple=True, help="Only these cameras; repeatable.")
@click.option("--meta", "metas", multiple=True, help="A meta condition key<op>value, e.g. 'magnitude<=-4'; repeatable.")
@click.option("--near", help="LAT,LON,KM: cameras within KM of the point.")
@click.option("--silent-hours", type=float, help="absence: hours without status, event or file.")
@click.option("--max-per-hour", type=click.IntRange(1, 100_000), default=60, show_default=True,
              help="Then one digest for the rest.")
@click.option("--digest", is_flag=True, help="One nightly digest instead of each notification.")
@click.option("--user", help="The archive user who owns it; without one, --email owns it.")
@click.option("--confirmed", is_flag=True,
              help="E-mail: the operator vouches that the address agreed, so no confirmation link is mailed "
                   "and the watch is active at once. Without it every e-mail watch waits for its link.")
@pass_ctx
@domain_errors
def watch_add(ctx: Context, name: str, webhook: str | None, email: str | None, kind: str,
              event_types: tuple[str, ...], cameras: tuple[str, ...], metas: tuple[str, ...], near: str | None,
              silent_hours: float | None, max_per_hour: int, digest: bool, user: str | None, confirmed: bool) -> None:
    """Add watch NAME.

    An e-mail watch, whoever owns it, mails only its confirmation link until that is opened
    (one link may wait per address), unless --confirmed: the operator's word that the address
    agreed. The caps on waiting links do not count the operator's adds."""
    from .notify import PermanentFailure, ask_confirmation, check_target
    if confirmed and not email:
        raise click.UsageError("--confirmed is for e-mail watches (a webhook needs no confirmation)")
    if silent_hours is not None and kind != "absence":
        raise click.ClickException(f"--silent-hours is for --kind absence; a {kind} watch would ignore it")
    wire = {"name": name, "kind": kind, "webhook": webhook, "email": email, "event_types": list(event_types),
            "cameras": list(cameras), "silent_hours": silent_hours, "max_per_hour": max_per_hour, "digest": digest,
            "meta": [WatchMeta.parse(m, f"--meta[{i}]").as_dict() for i, m in enumerate(metas)],
            "near": Near.parse(near, "--near").as_dict() if near else None}
    new = Watch.from_dict({k: v for k, v in wire.items() if v is not None}, "watch")
    if new.webhook:
        check_target(new.webhook, ctx.config.notify.allow_private_targets)
    stored, secret, confirm = ctx.db.create_watch(new, user, confirmed_by_operator=confirmed, limit_pending=False)
    if confirm:
        try:  # whatever goes wrong, ask_confirmation withdraws the watch: none is left half-added
            ask_confirmation(ctx.db, ctx.config.notify, stored, confirm)
        except PermanentFailure as e:
            raise click.ClickException(f"could not send the confirmation e-mail: {e}; watch not added") from None
        except OSError as e:
            raise click.ClickException(f"could not send the confirmation e-mail ({e}); watch not added") from None
    click.echo(f"watch {stored.name} added ({stored.kind}, {stored.channel} {stored.target})")
    if secret:
        click.echo(f"signing secret (shown once, keep it to verify webhooks): {secret}")
    if confirm:
        click.echo(f"confirmation link sent to {stored.email}: nothing is sent until it is opened "
                   f"(within {ctx.config.notify.confirm_hours:g} hours, or the watch is removed)")
    elif stored.email:
        click.echo(f"marked confirmed by the operator: notifications go to {stored.email} at once")


@watch.command("list")
@pass_ctx
@domain_errors
def watch_list(ctx: Context) -> None:
    """List watches: name, kind, channel, owner, state, id (names are unique per owner only)."""
    for w in ctx.db.get_watches():
        state = "active" if w.enabled and w.confirmed else ("unconfirmed" if w.enabled else f"disabled: {w.disabled_reason}")
        click.echo(f"{w.name}\t{w.kind}\t{w.channel} {w.target}\t{w.owner}\t{state}\t{w.watch_id.hex}")


@watch.command("delete")
@click.argument("name")
@OWNER_OPTION
@pass_ctx
@domain_errors
def watch_delete(ctx: Context, name: str, owner: str | None) -> None:
    """Delete watch NAME (or id) with its notifications and deliveries."""
    found = find_watch(ctx.db, name, owner)
    ctx.db.delete_watch(found.watch_id)
    click.echo(f"watch {found.name} of {found.owner} deleted")


@watch.command("test")
@click.argument("name")
@OWNER_OPTION
@pass_ctx
@domain_errors
def watch_test(ctx: Context, name: str, owner: str | None) -> None:
    """Queue a test notification for watch NAME (or id); the notifier sends it."""
    delivery_id = ctx.db.queue_test(find_watch(ctx.db, name, owner))
    click.echo(f"test notification queued as delivery {delivery_id}")


@watch.command("log")
@click.argument("name", required=False)
@OWNER_OPTION
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@pass_ctx
@domain_errors
def watch_log(ctx: Context, name: str | None, owner: str | None, limit: int) -> None:
    """Deliveries (of watch NAME, or id), newest first, with their state."""
    watch_id = find_watch(ctx.db, name, owner).watch_id if name else None
    for e in ctx.db.delivery_log(watch_id, limit):
        status = f"HTTP {e.last_status}" if e.last_status else "-"
        error = f"\t{e.last_error}" if e.last_error else ""
        click.echo(f"{e.delivery_id}\t{e.watch}\t{e.kind}\t{e.state}\tattempts={e.attempts}\t{status}"
                   f"\t{e.created_at.isoformat(timespec='seconds')}{error}")


@watch.command("replay")
@click.argument("delivery_id", type=click.IntRange(1))
@pass_ctx
@domain_errors
def watch_replay(ctx: Context, delivery_id: int) -> None:
    """Send what delivery DELIVERY_ID sent again (same webhook-id)."""
    new_id = ctx.db.replay_delivery(delivery_id)
    click.echo(f"delivery {delivery_id} queued again as delivery {new_id}")


@click.command("notify")
@pass_ctx
@domain_errors
def notify(ctx: Context) -> None:
    """Run matching and delivery alone (for archives that separate the roles). Stop with SIGTERM."""
    from .notify import run_forever
    ctx.config  # noqa: B018 - loads and validates the configuration before starting
    run_forever(ctx.config)

