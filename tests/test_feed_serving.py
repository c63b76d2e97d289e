"""The feed across ``meteorpi serve`` processes sharing one database, as an archive runs it."""
from __future__ import annotations

import requests

from .export_fixtures import add_export, exporter, night, wait_for
from .feed_client import StreamClient
from .server_fixtures import READER, TIMEOUT
from .test_server_serving import Served, serve_db  # noqa: F401  (fixture)


def test_two_servers_one_database_every_client_sees_every_import_once_in_commit_order(serve_db, node, tmp_path):
    first, second = Served(serve_db, workers=1), Served(serve_db, workers=1)
    clients = []
    try:
        start = requests.get(first.url + "/feed", auth=READER, timeout=TIMEOUT).json()["cursor"]
        clients = [StreamClient(first.url, start), StreamClient(second.url, start)]
        for c in clients:
            assert c.up_to_date.wait(20)
        registered = night(node, tmp_path, events=6, files_per_event=2, standalone=2)
        add_export(node, first.url + "/import", "event")
        add_export(node, first.url + "/import", "file")
        with exporter(node) as e:
            e.mark_all()
            totals = e.export_due()
        assert totals.failed == 0
        expected = {e.event_id.hex for e in registered.events} | {f.file_id.hex for f in registered.all_files}
        for c in clients:
            wait_for(lambda: expected <= {i["id"] for i in c.items}, 20, "every import on each stream")
        a, b = ([(i["kind"], i["id"]) for i in c.items] for c in clients)
        assert a == b                                   # the same order on both servers
        assert len(a) == len(set(a))                    # nothing twice
        cursors = [i["cursor"] for i in clients[0].items]
        assert cursors == sorted(cursors, key=lambda c: tuple(map(int, c.split("-"))))

        # A client of the first server is cut off when that server dies; it resumes on the other
        # from its last cursor and gets exactly what came after, nothing twice.
        seen = list(clients[0].items)
        for worker in first.workers():
            worker.kill()
        first.proc.kill()
        first.proc.wait(10)
        assert clients[0].done.wait(20)
        more = night(node, tmp_path, events=2, files_per_event=1, standalone=0, camera_id="cam-late")
        add_export(node, second.url + "/import", "event", name="to-second")
        with exporter(node) as e:
            e.mark_all()
            e.export_due()
        resumed = StreamClient(second.url, seen[-1]["cursor"])
        clients.append(resumed)
        late = {e.event_id.hex for e in more.events}
        wait_for(lambda: late <= {i["id"] for i in resumed.items}, 20, "the late events after resuming")
        assert not {i["id"] for i in resumed.items} & {i["id"] for i in seen}
    finally:
        for c in clients:
            c.close()
        for s in (first, second):
            if s.proc.poll() is None:
                s.stop()
