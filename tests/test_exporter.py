"""The exporter against the real import service over real sockets: what arrives, and how the
exporter behaves when the other end is down, erring, refusing or confused."""
from __future__ import annotations

import json
import logging

import pytest
from werkzeug.wrappers import Request, Response

from meteorpi_export import ExportState
from tests.export_fixtures import add_export, exporter, night
from tests.server_fixtures import IMPORTER, serve_in_thread


# Every test here runs over both protocols: version 1 as deployed nodes speak it, and the fast
# path (version 2), which the exporter uses when the server offers it.
PROTOCOL = {"fast_path": True}


@pytest.fixture(autouse=True, params=[1, 2], ids=["v1", "v2"])
def protocol(request):
    PROTOCOL["fast_path"] = request.param == 2
    yield request.param
    PROTOCOL["fast_path"] = True


def _drain(db, **settings):
    settings.setdefault("fast_path", PROTOCOL["fast_path"])
    with exporter(db, **settings) as e:
        e.mark_all()
        return e.export_due()


@pytest.mark.parametrize("kinds", [("event",), ("file",), ("event", "file")])
def test_node_archive_arrives_byte_for_byte(node, central, tmp_path, kinds):
    """Events (with their files), stand-alone files, or both: the archive equals the node's."""
    registered = night(node, tmp_path, events=2, files_per_event=1, standalone=2)
    for kind in kinds:
        add_export(node, central.import_url, kind)
    totals = _drain(node)
    expected = (2 if "event" in kinds else 0) + (2 if "file" in kinds else 0)
    assert (totals.completed, totals.failed, totals.confused) == (expected, 0, 0)
    assert central.counts() == ((2, 2 if "file" not in kinds else 4) if "event" in kinds else (0, 2))
    if kinds == ("event", "file"):
        assert central.check(node).ok, central.check(node).problems
    for config in node.get_export_configurations():
        assert set(node.get_export_task_states(config).values()) == {"complete"}
    assert totals.bytes_sent == sum(f.file_size for f in registered.all_files
                                    if ("event" in kinds and f not in registered.files)
                                    or ("file" in kinds and f in registered.files))


def test_second_run_sends_nothing_and_held_entities_cost_one_request(node, central, tmp_path, protocol):
    """Exported entities are never sent again; an entity the target already holds completes at
    once: one request each in version 1, one request for the whole batch in version 2."""
    night(node, tmp_path, events=2, standalone=0)
    add_export(node, central.import_url, "event", name="first")
    _drain(node)
    assert _drain(node).completed == 0
    add_export(node, central.import_url, "event", name="second")  # same entities, new configuration
    totals = _drain(node)
    assert (totals.completed, totals.requests, totals.bytes_sent) == (2, 2 if protocol == 1 else 1, 0)


def test_relay_node_to_relay_to_central(node, relay, central, tmp_path):
    """A relay exports what it imported: the node's archive reaches the central server intact."""
    night(node, tmp_path, events=1, files_per_event=1, standalone=1)
    add_export(node, relay.import_url, "event")
    add_export(node, relay.import_url, "file")
    add_export(relay.db, central.import_url, "event")
    add_export(relay.db, central.import_url, "file")
    assert _drain(node).ok
    assert _drain(relay.db).completed == 2
    check = central.check(node)
    assert check.ok, check.problems


def test_server_down_fails_defers_and_retries_later(node, tmp_path):
    """Connection refused: the task fails, its configuration waits, nothing is marked complete."""
    from meteorpi_server.demo import free_port
    night(node, tmp_path, events=1, standalone=0)
    config = add_export(node, f"http://127.0.0.1:{free_port()}/import", "event")
    totals = _drain(node, defer_on_failure_seconds=60)
    assert (totals.completed, totals.failed) == (0, 1)
    assert "connection refused" in totals.failures[0]
    progress = node.get_export_progress()[0]
    assert (progress.pending, progress.due, progress.consecutive_failures) == (1, 0, 1)
    assert set(node.get_export_task_states(config).values()) == {"pending"}


def _answering(body, status=200, content_type="application/json"):
    """A WSGI app answering every request the same way (a server that is not a meteorpi one,
    or a broken one)."""
    seen = []

    @Request.application
    def app(request):
        request.get_data()
        seen.append(request.path)
        text = body if isinstance(body, str) else json.dumps(body)
        return Response(text, status=status, content_type=content_type)
    url, server = serve_in_thread(app)
    return url, server, seen


@pytest.mark.parametrize("answer, status, state, words", [
    ({"state": "failed", "message": "boom"}, 500, ExportState.FAILED, "answered HTTP 500"),
    ("<html>Service Unavailable</html>", 503, ExportState.FAILED, "HTTP 503"),
    ("<html>Not Found</html>", 404, ExportState.FAILED, "HTTP 404"),
    ("<html>hello</html>", 200, ExportState.CONFUSED, "not a JSON object"),
    ({"state": "sideways"}, 200, ExportState.CONFUSED, "does not allow"),
    ({"state": "need_file_data", "file_id": "0" * 32}, 200, ExportState.CONFUSED, "not part of"),
    ({"state": "need_status", "status_id": "1" * 32}, 200, ExportState.CONFUSED, "does not refer to"),
    ({"state": "continue"}, 200, ExportState.FAILED, "no progress"),
])
def test_bad_answers_end_the_task(node, tmp_path, caplog, answer, status, state, words):
    """5xx and wrong URLs fail (retry later); answers the protocol does not allow confuse; an
    exchange that goes round in circles fails after export.max_repeats identical answers."""
    night(node, tmp_path, events=1, standalone=0)
    url, server, seen = _answering(answer, status)
    try:
        add_export(node, url + "/import", "event")
        with exporter(node, max_repeats=3) as e:
            e.mark_all()
            assert e.handle_next_export() == state
            assert words in e.last_report.message
            assert e.last_report.requests <= 4
    finally:
        server.shutdown()
    assert node.get_export_progress()[0].pending == 1
    assert any(r.levelno == logging.WARNING and words in r.getMessage() for r in caplog.records)


def test_refused_credentials_say_so_and_never_show_the_password(node, central, tmp_path, caplog):
    night(node, tmp_path, events=1, standalone=0)
    add_export(node, central.import_url, "event", auth=(IMPORTER[0], "wrong-password-xyz"))
    caplog.set_level(logging.DEBUG)
    totals = _drain(node)
    assert totals.failed == 1 and "refused the credentials of user 'importer'" in totals.failures[0]
    progress = node.get_export_progress()[0]
    assert "refused the credentials" in progress.last_error
    assert "wrong-password-xyz" not in caplog.text + str(totals) + progress.last_error + repr(progress)


def test_corrupted_file_on_the_node_fails_the_task_with_a_clear_message(node, central, tmp_path, caplog):
    """Bytes that no longer match their MD5 are never sent; the task fails and says which file."""
    registered = night(node, tmp_path, events=1, files_per_event=2, standalone=0)
    bad = registered.events[0].files[1]
    path = node.file_store.path(bad.file_id, bad.md5)
    path.write_bytes(b"rotten" + path.read_bytes()[6:])
    add_export(node, central.import_url, "event")
    totals = _drain(node)
    assert totals.failed == 1
    assert f"file {bad.file_id.hex}" in totals.failures[0] and "no longer match their MD5" in totals.failures[0]
    assert not central.db.has_file_data(bad.file_id)
    assert central.counts() == (0, 0)


def test_failures_in_a_row_disable_the_configuration_and_success_resets(node, central, tmp_path, caplog):
    from meteorpi_server.demo import free_port
    night(node, tmp_path, events=2, standalone=0)
    down = add_export(node, f"http://127.0.0.1:{free_port()}/import", "event", name="down")
    up = add_export(node, central.import_url, "event", name="up")
    for _ in range(2):
        totals = _drain(node, defer_on_failure_seconds=0, max_failures_before_disable=2)
    assert not node.get_export_configuration(down.name).enabled
    assert any(r.levelno == logging.ERROR and "DISABLED" in r.getMessage() for r in caplog.records)
    assert set(node.get_export_task_states(up).values()) == {"complete"}  # the other one carried on
    assert totals.failed == 1
    node.set_export_enabled(down.name, True)
    down.target_url = central.import_url
    node.update_export_configuration(down)
    node.record_task_failure(down.config_id, next(iter(node.get_export_task_states(down))), "x")
    assert _drain(node).completed == 2
    assert [p.consecutive_failures for p in node.get_export_progress()] == [0, 0]


def test_continue_nocache_resends_the_full_entity(node, central, tmp_path):
    """The server forgetting the entity mid-exchange (cache emptied) costs a resend, not a failure."""
    registered = night(node, tmp_path, events=1, files_per_event=2, standalone=0)
    add_export(node, central.import_url, "event")
    with exporter(node) as e:
        e.mark_all()
        meteor_app = central.server.app.extensions["meteorpi"]
        emptied = []

        def on_bytes(n):
            if not emptied:
                for cache in meteor_app.entity_caches.values():
                    cache.clear()
                emptied.append(True)
        e.on_bytes = on_bytes
        assert e.handle_next_export() == ExportState.COMPLETE
        # event, status, cached, data F1, cached -> continue-nocache, event, data F2, cached
        assert e.last_report.requests == 8
    assert central.db.get_event(registered.events[0].event_id).as_dict() == registered.events[0].as_dict()


def test_a_server_that_does_not_answer_in_time_fails_the_task(node, tmp_path):
    """The read timeout bounds every request: a stalled server costs a failed task, not a hang."""
    import time as _time

    @Request.application
    def stalled(request):
        _time.sleep(2)
        return Response("{}", content_type="application/json")
    url, server = serve_in_thread(stalled)
    try:
        night(node, tmp_path, events=1, standalone=0)
        add_export(node, url + "/import", "event")
        started = _time.monotonic()
        totals = _drain(node, read_timeout_seconds=0.3)
        assert totals.failed == 1 and "did not answer" in totals.failures[0]
        assert _time.monotonic() - started < 1.5
    finally:
        server.shutdown()
