"""The model's wire form: vectors round-trip exactly, bad input is refused with the field named."""
from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import uuid

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meteorpi_model import (WIRE_ENTITIES, CameraStatus, Event, EventSearch, ExportConfiguration,
                            FileRecord, FileRecordSearch, Meta, MetaConstraint, NSString, User,
                            ValidationError, fields, get_md5_hash, json_schema, night_offset_seconds,
                            wire_schema)
from meteorpi_model.fields import Int, ListOf, Model, field as model_field, field_pattern


@pytest.mark.parametrize("name", ["status", "file", "event"])
def test_vectors_round_trip_key_for_key(vectors, name):
    """Every protocol vector parses and as_dict() reproduces it exactly."""
    body = vectors[name][name]
    assert WIRE_ENTITIES[name].from_dict(body).as_dict() == body


def test_vector_values_are_natural_python(vectors):
    """Parsed values are UUIDs, aware UTC datetimes and NSStrings, not wire strings."""
    event = Event.from_dict(vectors["event"]["event"])
    assert isinstance(event.event_id, uuid.UUID)
    assert event.event_time == dt.datetime(2015, 6, 30, 2, 6, 40, tzinfo=dt.timezone.utc)
    assert event.event_type == NSString("meteor", "meteorpi")
    assert [f.file_name for f in event.files] == ["f1.bin", "f3.png"]
    assert event.meta_value("meteorpi:peak_time") == dt.datetime(2015, 6, 30, 2, 6, 40, 620000, tzinfo=dt.timezone.utc)


def _mutate(body: dict, path: list, value):
    body = copy.deepcopy(body)
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


BAD_EVENTS = [
    (["files", 1, "md5"], "xyz", "event.files[1].md5: expected 32 hex digits"),
    (["event_id"], "not-a-uuid", "event.event_id: expected 32 hex digits"),
    (["event_id"], KeyError, "event.event_id: required"),
    (["event_time"], "1435630000000", "event.event_time: expected an integer"),
    (["event_time"], -5, "event.event_time: -5 is outside"),
    (["event_time"], 1435630000000 * 1000, "event.event_time:"),
    (["event_type"], ":meteor", "event.event_type: namespace before ':' is empty"),
    (["event_type"], "meteorpi:", "event.event_type: value after ':' is empty"),
    (["files", 0, "file_size"], -1, "event.files[0].file_size: -1 is outside"),
    (["files", 0, "file_size"], True, "event.files[0].file_size: expected an integer"),
    (["files", 0, "meta", 0, "type"], "colour", "event.files[0].meta[0].type: expected one of"),
    (["files", 0, "meta", 1, "value"], 3, "event.files[0].meta[1].value: type is string"),
    (["meta", 2, "value"], "tomorrow", "event.meta[2].value: type is date but value is a string"),
    (["files", 0, "camera_id"], "x" * 65, "event.files[0].camera_id: longer than 64"),
    (["files", 0, "file_name"], "../../etc/passwd", "event.files[0].file_name:"),
    (["files"], {"a": 1}, "event.files: expected a list"),
    (["camera_id"], None, "event.camera_id: must not be null"),
    (["meta", 0, "value"], float("nan"), "event.meta[0].value: must be a finite number"),
]


@pytest.mark.parametrize("path,value,message", BAD_EVENTS, ids=[m for _, _, m in BAD_EVENTS])
def test_bad_event_is_refused_naming_the_field(vectors, path, value, message):
    """Each bad value raises ValidationError whose message starts with the field path."""
    with pytest.raises(ValidationError) as e:
        Event.from_dict(_mutate(vectors["event"]["event"], path, value))
    assert str(e.value).startswith(message)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("path,value,message", [
    (["location", "lat"], 91.0, "status.location.lat: 91.0 is outside [-90.0, 90.0]"),
    (["location", "long"], -180.5, "status.location.long:"),
    (["location", "gps"], "yes", "status.location.gps: expected true or false"),
    (["regions", 1, 0, "x"], -1, "status.regions[1][0].x:"),
    (["valid_to"], 1435600799999, "status.valid_to: is before valid_from"),
    (["lens"], "x" * 256, "status.lens: longer than 255 characters"),
    (["inst_name"], "a\x00b", "status.inst_name: contains a NUL character"),
])
def test_bad_status_is_refused_naming_the_field(vectors, path, value, message):
    with pytest.raises(ValidationError) as e:
        CameraStatus.from_dict(_mutate(vectors["status"]["status"], path, value))
    assert str(e.value).startswith(message)


def test_optional_fields_accept_null_and_are_left_out(vectors):
    """docs/protocol.md: an optional field may be sent as null; as_dict leaves it out."""
    body = dict(vectors["status"]["status"], inst_url=None, valid_to=None)
    out = CameraStatus.from_dict(body).as_dict()
    assert "inst_url" not in out and "valid_to" not in out


def test_uuid_is_parsed_case_insensitively_and_sent_lower_case(vectors):
    body = dict(vectors["file"]["file"], file_id=vectors["file"]["file"]["file_id"].upper())
    assert FileRecord.from_dict(body).as_dict()["file_id"] == vectors["file"]["file"]["file_id"]


def test_nsstring_without_namespace_is_meteorpi():
    assert str(NSString.from_string("meteor")) == "meteorpi:meteor"
    assert NSString.from_string("a:b:c") == NSString("b:c", "a")


def test_fields_is_cached_and_immutable():
    assert fields(Event) is fields(Event)
    assert isinstance(fields(Event), tuple)
    assert [f.name for f in fields(Meta)] == ["key", "value", "type"]


def test_json_schema_is_derived_from_declarations():
    """The schema carries the same bounds the parser enforces."""
    schema = json_schema(CameraStatus)
    lat = schema["$defs"]["Location"]["properties"]["lat"]
    assert (lat["minimum"], lat["maximum"]) == (-90.0, 90.0)
    assert "status_id" in schema["$defs"]["CameraStatus"]["required"]
    assert set(wire_schema()["$defs"]) >= {"CameraStatus", "FileRecord", "Event", "Meta", "EventSearch"}


def test_vectors_satisfy_the_json_schema(vectors):
    jsonschema = pytest.importorskip("jsonschema")
    full = wire_schema()
    for name, cls in WIRE_ENTITIES.items():
        jsonschema.validate(vectors[name][name], {**full, "$ref": f"#/$defs/{cls.__name__}"})


def test_get_md5_hash_streams_large_files(tmp_path):
    import hashlib
    path = tmp_path / "big"
    chunk = bytes(range(256)) * 4096
    with open(path, "wb") as f:
        for _ in range(5):
            f.write(chunk)
    assert get_md5_hash(path) == hashlib.md5(chunk * 5).hexdigest()


def test_user_roles():
    user = User(user_id="alice", roles=["import", "user"])
    assert user.has_role("import") and not user.has_role("camera_admin")
    assert user.get_roles() == ["import", "user"]
    with pytest.raises(ValidationError, match=r"user.roles\[0\]: expected one of"):
        User.from_dict({"user_id": "alice", "roles": ["root"]})


def test_export_configuration_never_shows_its_password():
    config = ExportConfiguration(name="central", target_url="https://example.org/import", user_id="node1",
                                 password="hunter2", type="event", search=EventSearch())
    assert "hunter2" not in repr(config) and "hunter2" not in str(config)
    assert config.as_dict(redact=True)["password"] == "***"
    again = ExportConfiguration.from_dict(config.as_dict())
    assert again.password == "hunter2" and isinstance(again.search, EventSearch)
    files = ExportConfiguration.from_dict({**config.as_dict(), "type": "file"})
    assert isinstance(files.search, FileRecordSearch)


def test_meta_constraint_values_follow_their_type():
    c = MetaConstraint.from_dict({"constraint_type": "after", "key": "meteorpi:t", "value": 1000})
    assert c.value == dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc)
    with pytest.raises(ValidationError, match="search.meta_constraints\\[0\\].value: less needs a number"):
        EventSearch.from_dict({"meta_constraints": [{"constraint_type": "less", "key": "k", "value": "x"}]})
    with pytest.raises(ValidationError, match="search.after: is greater than before"):
        EventSearch.from_dict({"after": 2000, "before": 1000})


def test_night_offset_is_measured_from_local_noon():
    midnight_utc = dt.datetime(2015, 6, 30, 0, 0, tzinfo=dt.timezone.utc)
    assert night_offset_seconds(midnight_utc, 0.0) == 12 * 3600
    assert night_offset_seconds(midnight_utc, 90.0) == 18 * 3600  # 06:00 local
    assert night_offset_seconds(midnight_utc, -180.0) == 0.0       # 12:00 local


# -- property tests --------------------------------------------------------------------------
ids = st.uuids()
instants = st.integers(0, 4102444799999)
camera_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
ns = st.from_regex(r"([a-z]{1,8}:)?[a-z_]{1,12}", fullmatch=True)
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
metas = st.one_of(
    st.builds(lambda k, v: {"type": "string", "key": k, "value": v}, ns, text),
    st.builds(lambda k, v: {"type": "number", "key": k, "value": v}, ns, st.one_of(finite, st.integers(-10**6, 10**6))),
    st.builds(lambda k, v: {"type": "date", "key": k, "value": v}, ns, instants),
)


def _file(camera, status):
    return st.fixed_dictionaries({
        "file_id": ids.map(lambda u: u.hex), "camera_id": st.just(camera), "status_id": st.just(status),
        "file_time": instants, "mime_type": st.sampled_from(["image/png", "video/mp4", "text/plain"]),
        "semantic_type": ns, "file_size": st.integers(0, 2**40),
        "md5": st.from_regex(r"[0-9a-f]{32}", fullmatch=True), "meta": st.lists(metas, max_size=4),
    }, optional={"file_name": st.from_regex(r"[A-Za-z0-9_.-]{1,30}", fullmatch=True)})


@st.composite
def events(draw):
    camera, status = draw(camera_ids), draw(ids).hex
    files = draw(st.lists(_file(camera, status), max_size=4, unique_by=lambda f: f["file_id"]))
    return {"event_id": draw(ids).hex, "camera_id": camera, "status_id": status, "event_time": draw(instants),
            "event_type": draw(ns), "files": files, "meta": draw(st.lists(metas, max_size=4))}


def _canonical(value):
    """NSStrings come back with their namespace spelled out; that is the only rewrite."""
    return json.loads(json.dumps(value))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_generated_events_round_trip(body):
    out = Event.from_dict(body).as_dict()
    for key in ("event_id", "camera_id", "status_id", "event_time"):
        assert out[key] == body[key]
    assert Event.from_dict(out).as_dict() == out
    assert [f["file_id"] for f in out["files"]] == [f["file_id"] for f in body["files"]]
    assert [m["value"] for m in out["meta"]] == [m["value"] for m in body["meta"]]


JUNK = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), text, st.lists(st.integers(), max_size=2),
                 st.dictionaries(text, st.integers(), max_size=2))


@st.composite
def mutated_events(draw):
    """A valid event with one field (at any depth) replaced by junk or removed."""
    body = draw(events())
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append(path + [k])
                walk(v, path + [k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                paths.append(path + [i])
                walk(v, path + [i])
    walk(body, [])
    path = draw(st.sampled_from(paths))
    return _mutate(body, path, draw(st.one_of(st.just(KeyError), JUNK)))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_events())
def test_mutated_events_raise_validation_error_only(body):
    """Whatever is broken, the only exception is ValidationError (never KeyError/TypeError...)."""
    try:
        Event.from_dict(body)
    except ValidationError as e:
        assert str(e).startswith("event")


@settings(max_examples=200)
@given(JUNK)
def test_non_object_bodies_are_validation_errors(value):
    for cls in WIRE_ENTITIES.values():
        with pytest.raises(ValidationError):
            cls.from_dict(value if not isinstance(value, dict) else {**value, "camera_id": 5})


def test_huge_integers_are_validation_errors_not_overflow():
    with pytest.raises(ValidationError, match="search.lat_min: is too large"):
        EventSearch.from_dict({"lat_min": 10 ** 400})


def test_a_string_where_a_list_belongs_is_refused():
    with pytest.raises(ValidationError, match="expected a list"):
        EventSearch(camera_ids="abc").validate()


# -- patterns: Python's check and the schema's ECMA regex refuse the same strings (issue 12 §2) --
class _Clumsy(Int):
    """A codec with the kind of slip that once made a 500: a conversion raising bare ValueError."""

    def decode(self, value, path):
        return int(str(value) + "!")


class _Buggy(Int):
    def decode(self, value, path):
        return value.no_such_attribute


@dataclasses.dataclass
class _Probe(Model):
    clumsy: int | None = model_field(_Clumsy(), optional=True)
    buggy: int | None = model_field(_Buggy(), optional=True)


def test_a_slip_inside_a_codec_still_names_the_field():
    """A bare ValueError/TypeError while decoding input is a ValidationError naming the field
    (a 400, not a 500); an AttributeError is a bug of ours and is not disguised."""
    with pytest.raises(ValidationError) as e:
        _Probe.from_dict({"clumsy": 1}, "probe")
    assert str(e.value).startswith("probe.clumsy: cannot be read: ValueError")
    with pytest.raises(AttributeError):
        _Probe.from_dict({"buggy": 1}, "probe")


def _pattern_codecs() -> dict:
    out = {}
    for cls in (CameraStatus, FileRecord, Event, Meta, EventSearch, FileRecordSearch, MetaConstraint, User,
                ExportConfiguration):
        for f in fields(cls):
            codec = f.codec.item if isinstance(f.codec, ListOf) else f.codec
            if "pattern" in codec.schema({}):
                out[f"{cls.__name__}.{f.name}"] = codec
    from meteorpi_model.watch import EMAIL
    out["Watch.email"] = EMAIL  # its code says why in words; the schema's pattern must agree
    return out


PATTERN_CODECS = _pattern_codecs()
SCHEMA_VALIDATORS = {name: jsonschema_rs.validator_for(codec.schema({})) for name, codec in PATTERN_CODECS.items()}
SPOILERS = {"none": lambda v: v, "newline": lambda v: v + "\n", "crlf": lambda v: v + "\r\n",
            "nul": lambda v: v[:1] + "\x00" + v[1:], "fullwidth": lambda v: v + "\uff11",
            "line separator": lambda v: v + "\u2028"}


def test_every_pattern_checked_field_is_covered():
    assert {"FileRecord.file_id", "FileRecord.md5", "FileRecord.mime_type", "FileRecord.file_name",
            "FileRecord.camera_id", "Meta.key", "Event.event_type", "User.user_id",
            "ExportConfiguration.target_url", "EventSearch.camera_ids", "Watch.email"} <= set(PATTERN_CODECS)


# Addresses a mail library reads as another address, or as none: a group ("x1:"), an encoded
# word, a comment's opening, control characters, quotes, spaces, routes; and malformed forms.
MISREAD_ADDRESSES = ["x1:target@example.org", "=?utf-8?q?target?=@example.org", "a(target@example.org",
                     "target\x01@example.org", "target\x7f@example.org", '"a b"@example.org', "a b@example.org",
                     "<target@example.org>", "a,target@example.org", "a;target@example.org", "@x:target@example.org",
                     "a@b@example.org", "target@example.org\n", "tärget@example.org", "target@exämple.org"]
MALFORMED_ADDRESSES = [".a@example.org", "a.@example.org", "a..b@example.org", "a@-example.org", "a@example-.org",
                       "a@example", "a@.example.org", "a@example..org", "a@example.org.", "a@exa_mple.org",
                       "@example.org", "a@", "a@" + "x" * 64 + ".org", "a" * 240 + "@" + "x" * 10 + ".org"]
PLAIN_ADDRESSES = ["a@b.co", "first.last+tag@sub.example.co.uk", "A_B%c-d@X-Y.example.ORG", "1@2.example",
                   "a@" + "x" * 63 + ".org", "a" * 64 + "@" + ".".join(["x" * 61] * 3) + ".xy"]


@pytest.mark.parametrize("address", MISREAD_ADDRESSES + MALFORMED_ADDRESSES)
def test_a_watch_takes_no_address_a_mailer_could_read_differently(address):
    """Review finding: ``x1:target@example.org`` (and ``x2:...``) passed and were mailed to
    target@example.org, defeating the one-link-per-address limit; ``a(target@example.org``
    went to ``<a>``. Only the plain form is taken, refused with why, naming the field."""
    from meteorpi_model.watch import Watch, email_refusal
    with pytest.raises(ValidationError) as refused:
        Watch.from_dict({"name": "w", "email": address}, "watch")
    assert str(refused.value).startswith("watch.email: ") and email_refusal(address)
    assert "not an address this archive mails" in str(refused.value) or "longer than 254" in str(refused.value)


@pytest.mark.parametrize("address", PLAIN_ADDRESSES)
def test_plain_addresses_are_taken_and_mean_themselves_to_the_mail_library(address):
    """What the rule takes, Python's e-mail parser (run by smtplib on headers and on every
    envelope address) reads back as exactly that address, alone."""
    import email.utils
    from email.headerregistry import Address
    from meteorpi_model.watch import Watch
    assert Watch.from_dict({"name": "w", "email": address}, "watch").email == address
    assert email.utils.parseaddr(address) == ("", address) and str(Address(addr_spec=address)) == address


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(PATTERN_CODECS)).flatmap(
    lambda name: st.tuples(st.just(name), st.from_regex(field_pattern(PATTERN_CODECS[name].schema({})["pattern"]),
                                                        fullmatch=True))),
       st.sampled_from(sorted(SPOILERS)))
def test_schema_and_code_refuse_the_same_strings(named_value, spoiler):
    """For every pattern-checked field, a string and its spoiled forms (trailing newline, CRLF,
    NUL, a fullwidth digit) pass the code exactly when they pass the JSON Schema as an ECMA
    regex engine reads it."""
    name, value = named_value
    codec, text = PATTERN_CODECS[name], SPOILERS[spoiler](value)
    try:
        codec.decode(text, name)
        code_accepts = True
    except ValidationError:
        code_accepts = False
    schema_accepts = SCHEMA_VALIDATORS[name].is_valid(text)
    assert code_accepts == schema_accepts, (name, text)
    if spoiler != "none":
        assert not code_accepts, (name, text)


# -- sameness: a record sent again must say what the held copy says (differences.py) ----------
def _vector_event(vectors) -> Event:
    return Event.from_dict(vectors["event"]["event"])


def test_copies_that_the_wire_cannot_tell_apart_are_the_same(vectors):
    """What storage or the wire changes is no difference: microseconds below the millisecond, a
    whole number stored as a float, a type name without its default namespace, a status's end
    of validity (the archive sets it), another time zone for the same instant."""
    from meteorpi_model.differences import first_difference
    sent = _vector_event(vectors)
    held = copy.deepcopy(sent)
    held.event_time = sent.event_time.astimezone(dt.timezone(dt.timedelta(hours=5))) + dt.timedelta(microseconds=400)
    held.event_type = NSString.from_string("meteor")  # meteorpi:meteor
    held.files[0].meta[0].value = float(sent.files[0].meta[0].value)  # 75 -> 75.0
    assert sent.event_type == NSString.from_string("meteorpi:meteor")
    assert first_difference(held, sent) is None
    status = CameraStatus.from_dict(vectors["status"]["status"])
    closed = dataclasses.replace(status, valid_to=status.valid_from + dt.timedelta(days=1))
    assert first_difference(closed, status) is None


@pytest.mark.parametrize("change, path", [
    (lambda e: setattr(e, "event_type", NSString.from_string("meteorpi:plane")), "event_type"),
    (lambda e: setattr(e, "event_time", e.event_time + dt.timedelta(milliseconds=1)), "event_time"),
    (lambda e: setattr(e.meta[1], "value", "a plane"), "meta[1].value"),
    (lambda e: e.meta.pop(), "meta"),
    (lambda e: setattr(e.files[1], "file_name", None), "files[1].file_name"),
    (lambda e: setattr(e.files[0].meta[0], "value", 76), "files[0].meta[0].value"),
    (lambda e: e.files.reverse(), "files[0].file_time"),  # the first field, in declaration order
])
def test_the_first_field_that_differs_is_named(vectors, change, path):
    from meteorpi_model.differences import first_difference
    held = _vector_event(vectors)
    sent = copy.deepcopy(held)
    change(sent)
    assert first_difference(held, sent) == path


def test_a_status_that_says_something_else_differs(vectors):
    from meteorpi_model.differences import first_difference
    held = CameraStatus.from_dict(vectors["status"]["status"])
    moved = copy.deepcopy(held)
    moved.location.lat += 1e-9
    assert first_difference(held, moved) == "location.lat"
    moved = copy.deepcopy(held)
    moved.regions[1][2].x += 1
    assert first_difference(held, moved) == "regions[1][2].x"


def test_entities_can_be_copied_and_pickled(vectors):
    """An NSString (immutable) comes through copy.deepcopy and pickle: an event holding them
    could not be copied before."""
    import pickle
    event = _vector_event(vectors)
    assert copy.deepcopy(event) == event
    assert pickle.loads(pickle.dumps(event)) == event


def test_a_file_records_md5_has_one_spelling(vectors):
    """Built in Python with an upper-case digest, a record holds it lower case, as the wire does:
    stored so, it is the same record when the node sends it again."""
    from meteorpi_model.differences import first_difference
    wire = FileRecord.from_dict(vectors["file"]["file"])
    built = dataclasses.replace(wire, md5=wire.md5.upper())
    assert built.md5 == wire.md5 and first_difference(built, wire) is None
