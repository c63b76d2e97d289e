"""Storage on real PostgreSQL: records, imports, the file store, users, migrations."""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
import threading
import uuid

import psycopg2
import pytest

from meteorpi_db import Conflict, FileTooLarge, Md5Mismatch, NotFound, file_store
from meteorpi_db.migrations import available
from meteorpi_db.pool import ConnectionPool
from meteorpi_model import CameraStatus, Event, FileRecord, Location, Meta, Orientation, ValidationError

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 1, 18, 0, tzinfo=UTC)


def make_status(camera="cam-a", lat=52.2, long=0.12) -> CameraStatus:
    return CameraStatus(camera_id=camera, lens="2.8mm", sensor="imx291", software_version=2, valid_from=T0,
                        location=Location(lat=lat, long=long, gps=True, error=5.0),
                        orientation=Orientation(alt=90.0, az=0.0, rot=0.0, error=1.0, width=120.0))


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.fixture
def vector_entities(vectors):
    return (CameraStatus.from_dict(vectors["status"]["status"]), Event.from_dict(vectors["event"]["event"]),
            FileRecord.from_dict(vectors["file"]["file"]))


def store_vector_bytes(db, vectors, event, record):
    for f, name in [(event.files[0], "f1.bin"), (event.files[1], "f3.bin"), (record, "f2.bin")]:
        db.file_store.store_stream(f.file_id, f.md5, [vectors["bytes"][name]])


# -- node side: registering ----------------------------------------------------------------------
def test_register_file_copies_bytes_and_measures_them(db, tmp_path):
    db.update_camera_status(make_status(), time=T0)
    data = os.urandom(300_000)
    record = db.register_file(write(tmp_path, "a.png", data), "image/png", "meteorpi:image", T0 + dt.timedelta(hours=1),
                              [Meta("meteorpi:exposure", 0.04)], "cam-a", file_name="a.png")
    assert (record.file_size, record.md5) == (len(data), hashlib.md5(data).hexdigest())
    assert db.file_path_for_id(record.file_id).read_bytes() == data
    assert db.get_file(record.file_id) == record
    assert db.has_file_data(record.file_id)


def test_register_event_keeps_file_order_and_meta(db, tmp_path):
    db.update_camera_status(make_status(), time=T0)
    t = T0 + dt.timedelta(hours=2)
    files = [db.register_file(write(tmp_path, f"{i}", os.urandom(100)), "image/png", "meteorpi:frame", t, [], "cam-a")
             for i in range(3)]
    event = db.register_event("cam-a", t, "meteorpi:meteor", files[::-1],
                              [Meta("meteorpi:peak", t), Meta("meteorpi:mag", -2.5), Meta("x:note", "bright")])
    got = db.get_event(event.event_id)
    assert [f.file_id for f in got.files] == [f.file_id for f in files[::-1]]
    assert got == event


def test_registering_without_a_status_is_refused(db, tmp_path):
    with pytest.raises(Conflict, match="camera 'nowhere' has no status"):
        db.register_file(write(tmp_path, "x", b"x"), "text/plain", "log", T0, [], "nowhere")
    assert db.file_store.root.joinpath("tmp").exists() and not any(db.file_store.tmp.iterdir())


def test_update_camera_status_closes_the_previous_one(db):
    first = db.update_camera_status(make_status(), time=T0)
    second = db.update_camera_status(make_status(lat=10.0), time=T0 + dt.timedelta(days=1))
    assert db.get_camera_status_by_id(first.status_id).valid_to == second.valid_from
    assert db.get_camera_status(T0 + dt.timedelta(hours=1), "cam-a").status_id == first.status_id
    assert db.get_camera_status(T0 + dt.timedelta(days=2), "cam-a").location.lat == 10.0
    assert db.get_camera_status(T0 - dt.timedelta(days=1), "cam-a") is None
    assert db.get_cameras() == ["cam-a"]


# -- server side: importing ------------------------------------------------------------------------
def test_vectors_import_and_read_back_unchanged(db, vectors, vector_entities):
    status, event, record = vector_entities
    assert db.import_camera_status(status) is True
    store_vector_bytes(db, vectors, event, record)
    assert db.import_event(event, "importer") is True
    assert db.import_file_record(record, "importer") is True
    assert db.get_event(event.event_id).as_dict() == vectors["event"]["event"]
    assert db.get_file(record.file_id).as_dict() == vectors["file"]["file"]
    assert db.get_camera_status_by_id(status.status_id).as_dict() == vectors["status"]["status"]


def test_importing_twice_is_a_no_op(db, vectors, vector_entities):
    status, event, record = vector_entities
    db.import_camera_status(status)
    store_vector_bytes(db, vectors, event, record)
    assert db.import_event(event, "a") is True
    assert db.import_event(event, "b") is False
    assert db.import_camera_status(status) is False
    with db.transaction() as cur:
        cur.execute("SELECT count(*) FROM event_file")
        assert cur.fetchone()[0] == 2
        cur.execute("SELECT user_id FROM import_record WHERE entity_id = %(id)s", {"id": event.event_id})
        assert cur.fetchone()[0] == "a"


def test_concurrent_imports_of_one_event_store_one_copy(make_database, vectors, vector_entities):
    """Eight threads deliver the same event at once: all succeed, one copy is held."""
    db = make_database("meteorpi_test")
    status, event, record = vector_entities
    db.import_camera_status(status)
    store_vector_bytes(db, vectors, event, record)
    results, errors, barrier = [], [], threading.Barrier(8)

    def deliver():
        barrier.wait()
        try:
            results.append(db.import_event(event, "node"))
        except Exception as e:  # pragma: no cover - the assertion below reports it
            errors.append(e)
    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sorted(results) == [False] * 7 + [True]
    with db.transaction() as cur:
        cur.execute("SELECT count(*) FROM event")
        assert cur.fetchone()[0] == 1


@pytest.mark.parametrize("change,message", [
    (lambda e: {"status_id": uuid.uuid4().hex}, "is not held"),
    (lambda e: {"event_time": 1435600799999}, "lies outside the validity"),
])
def test_import_contradicting_its_status_writes_nothing(db, vectors, vector_entities, change, message):
    status, event, record = vector_entities
    db.import_camera_status(status)
    store_vector_bytes(db, vectors, event, record)
    body = {**vectors["event"]["event"], **change(event)}
    bad = Event.from_dict(body)
    assert message in db.import_problem(bad)
    with pytest.raises(Conflict, match=message):
        db.import_event(bad, "node")
    assert not db.has_event_id(bad.event_id) and not db.has_file_id(bad.files[0].file_id)


def test_import_without_bytes_is_refused(db, vector_entities):
    status, event, record = vector_entities
    db.import_camera_status(status)
    with pytest.raises(Conflict, match="verified bytes with MD5 c3cd26e07e555c0116db237fbc06d99c are not held"):
        db.import_event(event, "node")
    assert not db.has_event_id(event.event_id)


def test_older_status_arriving_late_is_closed_by_the_newer(db):
    newer = make_status()
    newer.valid_from = T0 + dt.timedelta(days=1)
    older = make_status()
    db.import_camera_status(newer)
    db.import_camera_status(older)
    assert db.get_camera_status_by_id(older.status_id).valid_to == newer.valid_from
    assert db.get_camera_status_by_id(newer.status_id).valid_to is None


def test_upload_failures_are_counted_per_file_md5_and_account(db):
    """Counts of one account never add up with another's; a success of the file forgets all."""
    f, md5 = uuid.uuid4(), "a" * 32
    assert db.upload_failures(f, md5, "node-a") == 0
    assert [db.record_upload_failure(f, md5, "node-a") for _ in range(3)] == [1, 2, 3]
    assert db.record_upload_failure(f, md5, "node-b") == 1
    assert db.upload_failures(f, "b" * 32, "node-a") == 0
    assert db.upload_failure_counts([(f, md5)], "node-a") == {f: 3}
    db.clear_upload_failures(f)
    assert db.upload_failures(f, md5, "node-a") == 0 and db.upload_failures(f, md5, "node-b") == 0


# -- file store ---------------------------------------------------------------------------------
def test_file_store_refuses_bytes_that_do_not_match(db):
    file_id = uuid.uuid4()
    with pytest.raises(Md5Mismatch):
        db.file_store.store_stream(file_id, "0" * 32, [b"hello"])
    assert not db.file_store.has(file_id, "0" * 32) and not any(db.file_store.tmp.iterdir())


def test_file_store_limit_and_already_held(db):
    file_id, data = uuid.uuid4(), os.urandom(4096)
    md5 = hashlib.md5(data).hexdigest()
    with pytest.raises(FileTooLarge):
        db.file_store.store_stream(file_id, md5, [data], max_bytes=4095)
    assert db.file_store.store_stream(file_id, md5, [data[:2048], data[2048:]]) == 4096
    path = db.file_store.path(file_id, md5)
    before = path.stat().st_mtime_ns
    assert db.file_store.store_stream(file_id, md5, [b"junk"]) == 4096  # held: not rewritten
    assert path.stat().st_mtime_ns == before and path.read_bytes() == data
    assert path.parent.parent.name == file_id.hex[:2] and path.parent.name == file_id.hex[2:4]


LOCAL_COPY_SIZES = [0, 1, 4095, 4096, 4097, file_store.COPY_CHUNK_SIZE - 1, file_store.COPY_CHUNK_SIZE,
                    file_store.COPY_CHUNK_SIZE + 4097, 3879731]  # the last: an RMS FF file


def _copy_sources(tmp_path) -> list:
    sources = []
    for size in LOCAL_COPY_SIZES:
        source = tmp_path / "night" / f"file_{size}.bin"
        source.parent.mkdir(exist_ok=True)
        source.write_bytes(os.urandom(size))
        sources.append(source)
    return sources


def _assert_copied(store, sources, stored) -> None:
    for source, (file_id, size, md5) in zip(sources, stored):
        data = source.read_bytes()
        assert (size, md5) == (len(data), hashlib.md5(data).hexdigest()), source.name
        assert store.path(file_id, md5).read_bytes() == data, source.name
    assert not any(store.tmp.iterdir())


def test_local_copies_keep_every_byte_whatever_the_size(tmp_path):
    """Local copies are written around the page cache in aligned pieces, their tails through it:
    files of every size around those boundaries arrive whole, with the MD5 of their bytes."""
    from meteorpi_db import FileStore
    store, sources = FileStore(tmp_path / "store"), _copy_sources(tmp_path)
    stored = store.store_files(sources, lambda path, md5: uuid.uuid5(uuid.NAMESPACE_URL, path.name + md5))
    _assert_copied(store, sources, stored)


def test_local_copies_go_through_the_page_cache_when_the_disk_refuses_direct_writes(tmp_path, monkeypatch):
    """A disk that wants another alignment than ours answers direct writes with EINVAL (here: the
    real kernel, asked for writes of any length): the copy goes on through the page cache."""
    from meteorpi_db import FileStore
    monkeypatch.setattr(file_store, "DIRECT_ALIGN", 1)
    store, sources = FileStore(tmp_path / "store"), _copy_sources(tmp_path)
    stored = store.store_files(sources, lambda path, md5: uuid.uuid5(uuid.NAMESPACE_URL, path.name + md5))
    _assert_copied(store, sources, stored)


def _bounded(call, seconds: float = 20.0):
    """Run ``call`` in a thread; (result, exception) once it returns, failing the test if it is
    still running after ``seconds`` (a copy of a FIFO hung, one of /dev/zero never ended)."""
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = call()
        except BaseException as e:  # handed to the test
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still copying after {seconds:g} s"
    return outcome.get("result"), outcome.get("error")


@pytest.fixture
def small_file_limit():
    """Writes past 16 MiB fail (EFBIG) while the test runs: a copy that would read a source
    without end ends instead of filling the disk, if the refusal under test is missing."""
    import resource
    import signal
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024 ** 2, hard))
    yield
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)


@pytest.mark.parametrize("kind, follow, what", [
    ("link to /dev/zero", True, "a device"), ("fifo", True, "a FIFO"), ("folder", True, "a folder"),
    ("link to a file", False, "a symbolic link"), ("dangling link", False, "a symbolic link")])
def test_local_copies_take_regular_files_only(tmp_path, small_file_limit, kind, follow, what):
    """A copy reads its source to the end: one of /dev/zero has none (it wrote ~400 MB/s into
    tmp/), a FIFO blocks for ever. Each is refused at open, naming the file, before a temp file
    exists; so is a link when links are refused. Nothing of the batch is published."""
    from meteorpi_db import FileStore, SourceNotRegular
    store = FileStore(tmp_path / "store")
    good = write(tmp_path, "good.bin", os.urandom(5000))
    odd = tmp_path / "odd.bin"
    if kind == "link to /dev/zero":
        odd.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(odd)
    elif kind == "folder":
        odd.mkdir()
    elif kind == "link to a file":
        odd.symlink_to(write(tmp_path, "secret", b"not for the store"))
    else:
        odd.symlink_to(tmp_path / "nothing")
    try:
        _, error = _bounded(lambda: store.store_files([good, odd], lambda path, md5: uuid.uuid4(),
                                                      follow_symlinks=follow))
    finally:
        if kind == "fifo":  # a reader stuck in open (the refusal missing) gets an end
            try:
                os.close(os.open(odd, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader waiting: as it should be
                pass
    assert isinstance(error, SourceNotRegular), repr(error)
    assert (error.filename, error.strerror) == (str(odd), f"not a regular file ({what}): refused")
    assert not any(store.tmp.iterdir())
    assert [p for p in store.root.rglob("*") if p.is_file()] == []


def test_interrupted_local_copy_removes_its_temp_files_and_stops_its_threads(tmp_path, monkeypatch, ctrl_c_raises):
    """Ctrl-C while a batch is copied: the copies not started never start, those running end with
    their file, and every temp file is removed before the KeyboardInterrupt goes on (a night of
    1 GB left ~950 MB in tmp/ until the store was next opened)."""
    import signal
    import time
    from meteorpi_db import FileStore
    store = FileStore(tmp_path / "store")
    sources = [write(tmp_path, f"f{i}.bin", os.urandom(64 * 1024)) for i in range(40)]
    real = FileStore._copy_through

    def slow(self, source, incoming):  # 40 files at 0.1 s each, 4 at once: ~1 s in all
        real(self, source, incoming)
        time.sleep(0.1)

    monkeypatch.setattr(FileStore, "_copy_through", slow)
    interrupted_at = []

    def interrupt():
        deadline = time.monotonic() + 10
        while len(os.listdir(store.tmp)) < 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.15)  # some copies done, others running, most not started
        interrupted_at.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    helper = threading.Thread(target=interrupt, daemon=True)
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        store.store_files(sources, lambda path, md5: uuid.uuid4())
        time.sleep(5)  # finished before the interrupt came: fail below, not here
    stopped_after = time.monotonic() - interrupted_at[0]
    helper.join()
    assert stopped_after < 0.5, f"the copies went on for {stopped_after:.2f} s after the interrupt"
    assert not any(store.tmp.iterdir())
    assert not [t for t in threading.enumerate() if t.name.startswith("meteorpi-copy")]
    assert [p for p in store.root.rglob("*") if p.is_file()] == []


def test_crashed_writer_leaves_nothing_held(db):
    """Bytes in flight sit in tmp/ under a temp name and never count as held; old ones are swept."""
    file_id = uuid.uuid4()
    leftover = db.file_store.tmp / f"{file_id.hex}.partial"
    leftover.write_bytes(b"half a file")
    os.utime(leftover, (0, 0))
    assert db.file_store.find(file_id) is None
    assert db.file_store.sweep_temp_files(3600) == 1 and not leftover.exists()


def test_opening_the_store_removes_at_once_the_temp_files_of_writers_that_died(tmp_path):
    """A server SIGKILLed mid-upload leaves its half-received bytes; the next process to open the
    store removes them without waiting hours, and leaves alone what live writers are writing."""
    from meteorpi_db import FileStore
    root = tmp_path / "store"
    code = ("import sys, time, uuid\nfrom meteorpi_db import FileStore\n"
            "def chunks():\n    yield b'x' * 1000\n    print('writing', flush=True)\n    time.sleep(60)\n"
            f"FileStore({str(root)!r}).store_stream(uuid.uuid4(), '0' * 32, chunks())\n")
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "writing\n"
        [dead] = (root / "tmp").iterdir()
    finally:
        writer.kill()
        writer.communicate()
    alive = dead.with_name(dead.name.replace(f".{writer.pid}.", f".{os.getpid()}."))  # this process writing
    elsewhere = dead.with_name(dead.name.replace(dead.name.split(".")[1], "another-host"))
    for path in (alive, elsewhere):
        path.write_bytes(b"still arriving")
    FileStore(root)  # the next process opening the store
    assert sorted((root / "tmp").iterdir()) == sorted([alive, elsewhere])


# -- users -------------------------------------------------------------------------------------
def test_user_password_is_checked_and_only_a_hash_is_stored(db):
    db.create_or_update_user("alice", "correct horse", ["import", "user"])
    assert db.get_user("alice", "correct horse").roles == ["import", "user"]
    assert db.get_user("alice", "wrong") is None
    assert db.get_user("nobody", "correct horse") is None
    with db.transaction() as cur:
        cur.execute("SELECT password_hash FROM app_user")
        stored = cur.fetchone()[0]
    assert "correct horse" not in stored and stored.startswith(("scrypt:", "pbkdf2:"))


def test_user_roles_update_and_delete(db):
    db.create_or_update_user("bob", "pw", ["user"])
    db.create_or_update_user("bob", None, ["camera_admin"])
    assert db.get_user("bob", "pw").roles == ["camera_admin"]
    assert [u.user_id for u in db.get_users()] == ["bob"]
    db.delete_user("bob")
    with pytest.raises(NotFound):
        db.delete_user("bob")
    with pytest.raises(ValidationError, match="user.roles"):
        db.create_or_update_user("carol", "pw", ["root"])


# -- migrations and the embedded server ----------------------------------------------------------
def test_migrations_race_between_processes(pg_server):
    """Several processes migrating one fresh database at once all end at the same version."""
    from tests.conftest import database_url, drop_database
    admin_url, _ = pg_server
    name = f"race_{uuid.uuid4().hex[:8]}"
    url = database_url(admin_url, name)
    code = ("import sys; from meteorpi_db.pool import ConnectionPool; from meteorpi_db.migrations import migrate;"
            "print(migrate(ConnectionPool(sys.argv[1])))")
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [o[1] for o in outs]
    newest = available()[-1][0]  # whatever migrations are shipped, each applied exactly once
    assert {o[0].strip() for o in outs} == {str(newest).encode()}
    pool = ConnectionPool(url)
    with pool.transaction() as cur:
        cur.execute("SELECT count(*) FROM schema_version")
        assert cur.fetchone()[0] == len(available())
    pool.close()
    drop_database(admin_url, name)


def test_embedded_server_is_shared_and_stopped_by_its_last_client(tmp_path):
    """Two processes on one data dir share one server; it stops when the last one exits."""
    from meteorpi_db.embedded import EmbeddedPostgres
    data_dir = tmp_path / "data"
    code = ("import sys, time; from meteorpi_db import embedded; s = embedded.attach(sys.argv[1]);"
            "print(s.uri(), flush=True); sys.stdin.read()")
    first = subprocess.Popen([sys.executable, "-c", code, str(data_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    uri = first.stdout.readline().decode().strip()
    second = subprocess.Popen([sys.executable, "-c", code, str(data_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert second.stdout.readline().decode().strip() == uri
    server = EmbeddedPostgres(data_dir)
    first.communicate(b"", timeout=60)
    assert server._running(), "stopped while a client still used it"
    psycopg2.connect(uri).close()
    second.communicate(b"", timeout=60)
    assert not server._running()


@pytest.mark.parametrize("name", ["a\x00b", "", "x" * 200, "bad name"])
def test_get_user_refuses_impossible_names_without_error(db, name):
    assert db.get_user(name, "pw") is None


def test_overlapping_batch_imports_at_once_store_one_copy(make_database, tmp_path):
    """Two nodes' batches overlapping in half their events, imported at the same moment in
    opposite orders: no deadlock, every event held once with its files and order."""
    import dataclasses
    db = make_database("meteorpi_test")
    status = make_status()
    db.import_camera_status(status)
    events = []
    for i in range(20):
        data = os.urandom(1000)
        record = FileRecord(camera_id="cam-a", status_id=status.status_id, file_time=T0 + dt.timedelta(seconds=i),
                            mime_type="image/png", semantic_type="meteorpi:frame", file_size=len(data),
                            md5=hashlib.md5(data).hexdigest(), meta=[Meta("meteorpi:i", i)])
        db.file_store.store_stream(record.file_id, record.md5, [data])
        events.append(Event(camera_id="cam-a", status_id=status.status_id, event_time=record.file_time,
                            event_type="meteorpi:meteor", files=[record], meta=[Meta("meteorpi:n", "x")]))
    first, second = events[:15], events[5:][::-1]
    results, barrier = [], threading.Barrier(2)

    def deliver(batch):
        barrier.wait()
        results.append(db.import_batch([], batch, "node"))
    threads = [threading.Thread(target=deliver, args=(b,)) for b in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and all(problem is None for r in results for problem in r.values())
    with db.transaction() as cur:
        cur.execute("SELECT (SELECT count(*) FROM event), (SELECT count(*) FROM event_file), "
                    "(SELECT count(*) FROM file_meta), (SELECT count(*) FROM import_record)")
        assert cur.fetchone() == (20, 20, 20, 40)
    assert db.get_event(events[7].event_id) == dataclasses.replace(events[7])


class _TrickleThenReset:
    """An upload body read the way ``meteorpi serve`` reads one (``readinto`` straight from the
    socket), whose connection hands over a few bytes per read (a poor link) and is reset after
    ``cut_after`` bytes."""

    def __init__(self, body: bytes, cut_after: int, per_read: int = 1000):
        self.body, self.cut_after, self.per_read, self.sent = body, cut_after, per_read, 0

    def readinto(self, buffer) -> int:
        if self.sent >= self.cut_after:
            raise ConnectionResetError("connection reset by peer")
        n = min(len(buffer), self.per_read, self.cut_after - self.sent)
        buffer[:n] = self.body[self.sent:self.sent + n]
        self.sent += n
        return n


@pytest.mark.parametrize("sizes", [(300_000, 200_000), (4096 * 3, 5000, 70_001), (1, 4095, 4097)])
def test_uploads_written_around_the_page_cache_keep_every_byte_that_arrived(tmp_path, sizes):
    """An upload is gathered into whole aligned pieces before they are written directly; a reset
    in the middle of a piece must not lose what that piece had gathered: the whole files are
    published and the cut file's prefix is kept to the last byte received."""
    from meteorpi_db import FileStore, UploadCut
    store = FileStore(tmp_path / "store")
    files = [(uuid.uuid4(), os.urandom(size)) for size in sizes]
    body = b"".join(data for _, data in files)
    cut_at = len(body) - len(files[-1][1]) // 2 - 1  # inside the last file
    items = [(file_id, hashlib.md5(data).hexdigest(), len(data)) for file_id, data in files]
    with pytest.raises(UploadCut):
        store.store_many(items, _TrickleThenReset(body, cut_at), owner="node-1")
    for file_id, data in files[:-1]:
        assert store.path(file_id, hashlib.md5(data).hexdigest()).read_bytes() == data
    last_id, last = files[-1]
    kept = len(last) - (len(body) - cut_at)
    assert store.resumable([(last_id, hashlib.md5(last).hexdigest())], "node-1") == ({last_id: kept} if kept else {})
    # ... and the rest, sent from there, completes the file.
    rest = last[kept:]
    assert store.store_many([items[-1]], _TrickleThenReset(rest, len(rest)), offsets={last_id: kept},
                            owner="node-1") == {last_id: None}
    assert store.path(last_id, hashlib.md5(last).hexdigest()).read_bytes() == last
