"""Eight camera nodes holding the same entities deliver them to one server at the same moment:
each entity is stored once and every exporter hears complete (docs/protocol.md weak point 4)."""
from __future__ import annotations

import threading

import pytest

from meteorpi_export import ExportTotals, MeteorExporter
from tests.export_fixtures import add_export
from tests.server_fixtures import IMPORTER

from .checks import compare_archives
from .replication import BackgroundExporter, more_work

EXPORTERS = 8


def copy_night(source, target, night) -> None:
    """Hold on ``target`` exactly what ``night`` registered on ``source`` (same ids, same bytes)."""
    target.import_camera_status(night.status)
    for record in night.all_files:
        target.file_store.store_file(record.file_id, source.file_store.path(record.file_id, record.md5))
    for event in night.events:
        target.import_event(event, "copied")
    for record in night.files:
        target.import_file_record(record, "copied")


@pytest.mark.parametrize("fast_path", [pytest.param(True, id="fast-path"), pytest.param(False, id="protocol-1")])
def test_eight_exporters_deliver_the_same_entities_at_once(make_database, served, tmp_path, tally, scale,
                                                           fast_path):
    """Each round, a night is copied to 8 node databases; 8 exporters (threads, one per node)
    released by a barrier deliver it to `meteorpi serve` with 2 worker processes."""
    nodes = [make_database(f"rel_node_{i}") for i in range(EXPORTERS)]
    central = make_database("rel_central")
    server = served(central, workers=2)
    for node in nodes:
        for kind in ("event", "file"):
            add_export(node, f"{server.url}/import", kind, name=f"to-central-{kind}s", auth=IMPORTER)
    settings = BackgroundExporter(nodes[0], fast_path=fast_path).settings
    rounds, entities = scale(3, 30), 0
    for round_number in range(rounds):
        night = more_work(nodes[0], tmp_path, events=4, files_per_event=2, standalone=2, file_size=8 * 1024,
                          seed=round_number)
        for node in nodes[1:]:
            copy_night(nodes[0], node, night)
        entities += night.entities
        barrier, totals, errors = threading.Barrier(EXPORTERS), [ExportTotals() for _ in nodes], []

        def deliver(i: int) -> None:
            try:
                with MeteorExporter(nodes[i], settings) as exporter:
                    exporter.mark_all()
                    barrier.wait(30)
                    totals[i] = exporter.export_due()
            except BaseException as e:
                errors.append(e)
        threads = [threading.Thread(target=deliver, args=(i,)) for i in range(EXPORTERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        for i, t in enumerate(totals):
            tally.add("inputs", t.completed)
            assert (t.completed, t.failed, t.confused) == (night.entities, 0, 0), (i, t.failures)
    result = compare_archives(nodes[0], central, server.url)
    tally.add("lost", result.lost)
    tally.add("duplicated", result.duplicated)
    tally.measure("entities, each delivered by 8 exporters at once", entities)
    assert result.entities == entities
    assert not result.problems, result.problems[:10]
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.find("Traceback"):][:3000]
