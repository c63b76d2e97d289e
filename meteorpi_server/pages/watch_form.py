"""The add-a-watch form: its fields, as a browser posts them, to a ``Watch`` and back.

One input per thing a person decides; lists are typed the way the command line takes them:
event types and cameras comma-separated, meta conditions one ``key<op>value`` per line
(``meteorpi:peak_magnitude<=-4``), the area ``LAT, LON, KM``. Every problem is a
ValidationError naming the form field (``form.webhook``, ``form.meta line 2``), and the form
comes back holding what was typed, so only that field needs correcting. Fields are read through
``meteorpi_server.params``: one value each, and numbers in ASCII digits by the Watch's own codecs
(``max_per_hour=١٠`` or ``1_0`` is refused, not stored as 10).
"""
from __future__ import annotations

from typing import Mapping

from meteorpi_model import fields
from meteorpi_model.watch import WATCH_KINDS, Near, Watch, WatchMeta

from .. import params

NUMBER_FIELDS = ("silent_hours", "max_per_hour")
TEXT_FIELDS = ("name", "kind", "webhook", "email", "event_types", "cameras", "meta", "near", "silent_hours",
               "max_per_hour")
CHECKBOXES = ("notify_on_join", "digest")
MAX_SHOWN_CHARS = 8000
KIND_LABELS = {"event": "each matching event", "coincidence": "each coincidence (seen by two or more cameras)",
               "absence": "a camera gone silent"}
assert set(KIND_LABELS) == set(WATCH_KINDS)


def blank() -> dict[str, str]:
    """What a new form shows: the model's defaults."""
    values = {name: "" for name in TEXT_FIELDS}
    values.update(kind="event", max_per_hour="60", notify_on_join="on", digest="")
    return values


def as_sent(form: Mapping) -> dict[str, str]:
    """The values posted, as text to show again (a browser sends an unticked box as nothing)."""
    values = {name: (form.get(name) or "").strip()[:MAX_SHOWN_CHARS] for name in TEXT_FIELDS}
    values.update({name: "on" if form.get(name) else "" for name in CHECKBOXES})
    return values


def _listed(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def _sent(form: Mapping) -> dict[str, str]:
    """Each field's one value as posted ('' when absent); a field posted twice is refused
    rather than one of its values silently winning."""
    return {name: params.single(form, name, f"form.{name}") or "" for name in (*TEXT_FIELDS, *CHECKBOXES)}


def parse(form: Mapping) -> Watch:
    """The watch the posted ``form`` describes (owner, id and state are the server's)."""
    sent = _sent(form)
    values = as_sent(form)
    wire: dict = {"name": values["name"], "kind": values["kind"], "event_types": _listed(values["event_types"]),
                  "cameras": _listed(values["cameras"]), "notify_on_join": bool(values["notify_on_join"]),
                  "digest": bool(values["digest"])}
    for channel in ("webhook", "email"):
        if values[channel]:
            wire[channel] = values[channel]
    lines = [line.strip() for line in values["meta"].splitlines()]
    wire["meta"] = [WatchMeta.parse(line, f"form.meta line {i}").as_dict()
                    for i, line in enumerate(lines, start=1) if line]
    if values["near"]:
        wire["near"] = Near.parse(values["near"], "form.near").as_dict()
    codecs = {f.name: f.codec for f in fields(Watch)}
    for name in NUMBER_FIELDS:  # as sent, not stripped: " 3 " is no number either
        if sent[name]:
            wire[name] = params.value(codecs[name], sent[name], f"form.{name}")
    return Watch.from_dict(wire, "form")
