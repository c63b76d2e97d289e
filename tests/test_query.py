"""Searches in URL query strings: search_from_query / search_to_query.

The round trip is checked on searches generated from the fields' own declarations, so a field
added to EventSearch or FileRecordSearch is covered without touching this file.
"""
from __future__ import annotations

import json
import urllib.parse

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

from meteorpi_model import (EventSearch, FileRecordSearch, MetaConstraint, NSString, ValidationError,
                            fields, ms_to_instant, search_from_query, search_to_query)
from meteorpi_model.fields import Bool, Choice, Float, Instant, Int, ListOf, NS, Nested, Str
from meteorpi_model.search import CONSTRAINT_TYPES
from meteorpi_model.values import INSTANT_MAX_MS, INSTANT_MIN_MS

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
NAMESPACE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00:"),
                    min_size=1, max_size=10)
MILLIS = st.integers(INSTANT_MIN_MS, INSTANT_MAX_MS)
NS_STRINGS = st.builds(lambda ns, s: f"{ns}:{s}", NAMESPACE, TEXT.filter(bool))


def meta_constraint_wire():
    def value_for(kind):
        if kind in ("before", "after"):
            return MILLIS
        if kind in ("string_equals", "contains"):
            return TEXT
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers(-2 ** 53, 2 ** 53)
    return st.sampled_from(CONSTRAINT_TYPES).flatmap(
        lambda kind: st.fixed_dictionaries({"constraint_type": st.just(kind), "key": NS_STRINGS,
                                            "value": value_for(kind)}))


def wire_strategy(codec):
    """Valid wire values of one codec (bounds taken from the codec itself)."""
    if isinstance(codec, Instant):
        return MILLIS
    if isinstance(codec, Int):
        return st.integers(codec.minimum, codec.maximum)
    if isinstance(codec, Float):
        return st.floats(codec.minimum, codec.maximum, allow_nan=False)
    if isinstance(codec, Bool):
        return st.booleans()
    if isinstance(codec, Choice):
        return st.sampled_from(codec.choices)
    if isinstance(codec, NS):
        return NS_STRINGS
    if isinstance(codec, Str):
        text = st.from_regex(codec.pattern, fullmatch=True) if codec.pattern else TEXT
        return text.filter(lambda t: codec.min_length <= len(t) <= codec.max_length and "\x00" not in t)
    if isinstance(codec, ListOf):
        return st.lists(wire_strategy(codec.item), max_size=4)
    if isinstance(codec, Nested) and codec.cls is MetaConstraint:
        return meta_constraint_wire()
    raise AssertionError(f"no strategy for {codec!r}: add one")


def searches(cls):
    strategies = {f.name: wire_strategy(f.codec) for f in fields(cls)}
    return st.fixed_dictionaries({}, optional=strategies).map(lambda wire: _parse_or_none(cls, wire))


def _parse_or_none(cls, wire):
    try:
        return cls.from_dict(wire)
    except ValidationError:  # e.g. lat_min above lat_max
        return None


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.sampled_from([EventSearch, FileRecordSearch]).flatmap(searches))
def test_a_search_survives_the_round_trip_through_a_url(search):
    assume(search is not None)
    url_query = urllib.parse.urlencode(search_to_query(search))
    parsed = urllib.parse.parse_qs(url_query, keep_blank_values=True)
    assert search_from_query(type(search), parsed) == search


def q(text: str) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(text, keep_blank_values=True)


META = urllib.parse.quote(json.dumps([{"constraint_type": "contains", "key": "meteorpi:note", "value": "a"},
                                      {"constraint_type": "before", "key": "x:y:z", "value": 1000}]))


@pytest.mark.parametrize("cls, text, expected", [
    (EventSearch, "", EventSearch()),
    (EventSearch, "camera_ids=a&camera_ids=b,c", EventSearch(camera_ids=["a", "b", "c"])),
    (EventSearch, "camera_ids=", EventSearch(camera_ids=[])),
    (EventSearch, "lat_min=-10.5&lat_max=10&long_min=1e1",
     EventSearch(lat_min=-10.5, lat_max=10.0, long_min=10.0)),
    (EventSearch, "after=1000&before=2000",
     EventSearch(after=ms_to_instant(1000), before=ms_to_instant(2000))),
    (EventSearch, "after_offset=3600&before_offset=7200.5",
     EventSearch(after_offset=3600.0, before_offset=7200.5)),
    (EventSearch, "event_type=meteor", EventSearch(event_type=NSString("meteor"))),
    (EventSearch, "event_type=ns:a:b", EventSearch(event_type=NSString("a:b", "ns"))),
    (EventSearch, "exclude_imported=true&limit=0&skip=20",
     EventSearch(exclude_imported=True, limit=0, skip=20)),
    (EventSearch, "exclude_imported=0", EventSearch(exclude_imported=False)),
    (EventSearch, "limit=5&callback=jsonp123&_=1435664400123", EventSearch(limit=5)),
    (FileRecordSearch, "mime_type=image/png&semantic_type=x:y&exclude_events=TRUE",
     FileRecordSearch(mime_type="image/png", semantic_type=NSString("y", "x"), exclude_events=True)),
    (FileRecordSearch, "mime_type=%27%3B--%25_", FileRecordSearch(mime_type="';--%_")),
    (FileRecordSearch, f"meta_constraints={META}",
     FileRecordSearch(meta_constraints=[
         MetaConstraint("contains", NSString("note"), "a"),
         MetaConstraint("before", NSString("y:z", "x"), ms_to_instant(1000))])),
])
def test_query_parameters_become_the_search_they_describe(cls, text, expected):
    assert search_from_query(cls, q(text)) == expected


def test_a_werkzeug_multidict_gives_every_repeated_value():
    args = MultiDict([("camera_ids", "a"), ("camera_ids", "b"), ("limit", "3")])
    assert search_from_query(EventSearch, args) == EventSearch(camera_ids=["a", "b"], limit=3)


@pytest.mark.parametrize("cls, text, path", [
    (EventSearch, "colour=red", "query.colour"),
    (EventSearch, "mime_type=image/png", "query.mime_type"),  # a file search field
    (FileRecordSearch, "event_type=meteor", "query.event_type"),
    (EventSearch, "limit=1&limit=2", "query.limit"),
    (EventSearch, "limit=ten", "query.limit"),
    (EventSearch, "limit=-1", "query.limit"),
    (EventSearch, "limit=99999", "query.limit"),
    (EventSearch, "skip=1.5", "query.skip"),
    (EventSearch, "skip=" + "9" * 5000, "query.skip"),
    (EventSearch, "after=1.5e3", "query.after"),
    (EventSearch, "after=-1", "query.after"),
    (EventSearch, "before=99999999999999999999", "query.before"),
    (EventSearch, "lat_min=north", "query.lat_min"),
    (EventSearch, "lat_min=nan", "query.lat_min"),
    (EventSearch, "lat_min=inf", "query.lat_min"),
    (EventSearch, "lat_min=1e999", "query.lat_min"),
    (EventSearch, "lat_min=91", "query.lat_min"),
    (EventSearch, "lat_min=5&lat_max=1", "query.lat_min"),
    (EventSearch, "after=2000&before=1000", "query.after"),
    (EventSearch, "after_offset=86401", "query.after_offset"),
    (EventSearch, "exclude_imported=yes", "query.exclude_imported"),
    (EventSearch, "exclude_imported=", "query.exclude_imported"),
    (EventSearch, "camera_ids=a,,b", "query.camera_ids[1]"),
    (EventSearch, "camera_ids=a%27b", "query.camera_ids[0]"),
    (EventSearch, "event_type=:x", "query.event_type"),
    (EventSearch, "event_type=", "query.event_type"),
    (EventSearch, "meta_constraints=[", "query.meta_constraints"),
    (EventSearch, "meta_constraints=NaN", "query.meta_constraints"),
    (EventSearch, "meta_constraints={}", "query.meta_constraints"),
    (EventSearch, "meta_constraints=" + "[" * 50000, "query.meta_constraints"),
    (EventSearch, 'meta_constraints=[{"constraint_type":"less","key":"k","value":1' + "0" * 400 + "}]",
     "query.meta_constraints[0].value"),
    (EventSearch, 'meta_constraints=[{"constraint_type":"less","key":"k","value":"x"}]',
     "query.meta_constraints[0].value"),
    (EventSearch, 'meta_constraints=[{"constraint_type":"like","key":"k","value":"x"}]',
     "query.meta_constraints[0].constraint_type"),
    (FileRecordSearch, "exclude_events=true&exclude_events=false", "query.exclude_events"),
])
def test_bad_query_parameters_are_a_validation_error_naming_the_parameter(cls, text, path):
    with pytest.raises(ValidationError) as caught:
        search_from_query(cls, q(text))
    assert caught.value.path == path


def test_every_unknown_parameter_is_named():
    with pytest.raises(ValidationError, match="colour, size"):
        search_from_query(EventSearch, q("size=1&colour=red&limit=2"))


def test_a_search_at_its_defaults_needs_no_parameters():
    assert search_to_query(EventSearch()) == {}
    assert search_to_query(FileRecordSearch(limit=100, skip=0, meta_constraints=[])) == {}
