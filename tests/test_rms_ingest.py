"""Ingesting RMS nights (meteorpi_rms, ``meteorpi ingest rms``): the parser, what becomes
what, ids derived from the data, refusals of bad input, and the night reaching a central
archive byte for byte. Every night is written by tests/rms_writer.py: no copied RMS data."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from meteorpi_db import StoreWriteFailed
from meteorpi_rms import FormatError, NightInProgress, NightVanished, ingest_night, ingest_paths
from meteorpi_rms.config import read_config
from meteorpi_rms.ftpdetectinfo import parse
from tests.export_fixtures import add_export, cli_env, meteorpi, start_meteorpi, wait_for
from tests.rms_writer import (NIGHT_START, Meteor, NightSpec, detectinfo_text, ff_name, ff_start, night_name,
                              write_night)

COUNTS = """SELECT (SELECT count(*) FROM camera_status), (SELECT count(*) FROM event),
                   (SELECT count(*) FROM file_record)"""


def counts(db) -> tuple[int, int, int]:
    """(statuses, events, files) held."""
    with db.transaction() as cur:
        cur.execute(COUNTS)
        return tuple(cur.fetchone())


def write_detectinfo(tmp_path: Path, spec: NightSpec) -> Path:
    path = tmp_path / f"FTPdetectinfo_{night_name(spec.station, spec.start)}.txt"
    path.write_text(detectinfo_text(spec))
    return path


# -- the parser ---------------------------------------------------------------------------------

@pytest.mark.parametrize("columns", [9, 12])
@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
def test_parser_reads_9_and_12_columns_padded_or_not_with_negatives(tmp_path, columns, padded):
    """The same detections, written as old (9) or new (12 columns) RMS, zero-padded or bare
    (negative magnitudes, declinations and altitudes), read to the same numbers."""
    spec = NightSpec(columns=columns, padded=padded)
    info = parse(write_detectinfo(tmp_path, spec))
    assert info.count == 3 and info.rms_version == "RMS 1.0"
    first = info.detections[0]
    assert first.ff_name == ff_name(spec.station, ff_start(spec, 3))
    assert (first.meteor_number, first.fps, len(first.rows)) == (1, 25.0, 12)
    row = first.rows[1]
    assert (row.frame, row.x, row.y) == (31.0, 632.5, 23.25)
    assert row.dec == pytest.approx(-12.55) and row.alt == pytest.approx(-0.1) and row.magnitude == 1.0
    assert first.peak_magnitude == pytest.approx(-1.5)
    assert (row.background, row.snr) == ((51.0, 12.5) if columns == 12 else (None, None))
    assert first.angular_speed == 7.9 and first.rho == -123.4


@pytest.mark.parametrize("micro", [False, True], ids=["milliseconds", "microseconds"])
def test_detection_time_is_ff_start_plus_first_frame_over_fps_to_the_millisecond(tmp_path, micro):
    """FF names carry milli- or (some RMS versions) microseconds; the event time is rounded to
    the millisecond the wire form holds."""
    spec = NightSpec(micro_ff_names=micro, meteors=[Meteor(0, first_frame=30.5)])
    detection = parse(write_detectinfo(tmp_path, spec)).detections[0]
    expected = ff_start(spec, 0) + _dt.timedelta(seconds=30.5 / 25)
    assert abs(detection.start_time - expected) < _dt.timedelta(microseconds=500)
    assert detection.start_time.microsecond % 1000 == 0


def _garble(text: str, how: str) -> str:
    lines = text.splitlines(keepends=True)
    if how == "text in a number":
        lines[15] = lines[15].replace("0640.00", "06x0.00")
    elif how == "row with 10 fields":
        lines[17] = " ".join(lines[17].split()[:10]) + "\n"
    elif how == "parameter line short":
        lines[14] = "   0 0001 0012 0025.00 000.0\n"
    elif how == "not an FF name":
        lines[12] = "XX0001_image.fits\n"
    elif how == "cut mid-line":
        return "".join(lines[:20]) + lines[20][:12]
    elif how == "count too high":
        lines[0] = "Meteor Count = 000004\n"
    elif how == "not FTPdetectinfo":
        lines[0] = "hello\n"
    elif how == "cut mid-detection":
        return "".join(lines[:14])
    return "".join(lines)


@pytest.mark.parametrize("how, line, phrase", [
    ("text in a number", 16, "'06x0.00' is not a number"),
    ("row with 10 fields", 18, "a row has 10 fields"),
    ("parameter line short", 15, "expected 10 fields"),
    ("not an FF name", 13, "is not an FF file name"),
    ("cut mid-line", 21, "truncated"),
    ("count too high", 59, "3 detection(s) found, the header announces 4"),
    ("not FTPdetectinfo", 1, "not an FTPdetectinfo file"),
    ("cut mid-detection", 14, "ends before its parameter line"),
])
def test_garbled_ftpdetectinfo_names_file_and_line(tmp_path, how, line, phrase):
    path = write_detectinfo(tmp_path, NightSpec())
    path.write_text(_garble(path.read_text(), how))
    with pytest.raises(FormatError) as e:
        parse(path)
    assert str(e.value).startswith(f"{path.name} line {line}: "), str(e.value)
    assert phrase in str(e.value)


def _replace_field(text: str, line: int, field: int, value: str) -> str:
    """``text`` with field ``field`` (0-based) of line ``line`` (1-based) replaced by ``value``."""
    lines = text.splitlines(keepends=True)
    fields = lines[line - 1].split()
    fields[field] = value
    lines[line - 1] = " ".join(fields) + "\n"
    return "".join(lines)


@pytest.mark.parametrize("line, field, value, phrase", [
    (16, 1, "06_40.00", "row: '06_40.00' is not a number"),              # float() read it as 640
    (16, 0, "3_0", "row: '3_0' is not a number"),
    (16, 1, "\u0666\u0664\u0660.00", "row: '\u0666\u0664\u0660.00' is not a number"),  # Arabic-Indic 640
    (16, 8, "\uff0b1.50", "is not a number"),                             # a full-width plus
    (16, 3, "Infinity", "row: 'Infinity' is not a number"),
    (16, 4, "NaN", "row: 'NaN' is not a number"),                         # RMS writes nan, lower case
    (16, 2, "0x14", "row: '0x14' is not a number"),
    (15, 1, "0\u0661", "parameter line: '0\u0661' is not a number"),
    (15, 3, "25_0", "parameter line: '25_0' is not a number"),
    (15, 7, "00nan", "parameter line: every value must be a finite number"),
    (15, 1, "-0001", "the meteor number not negative"),
    (16, 0, "-0", "frame '-0' is negative"),
    (16, 0, "-0.0000", "frame '-0.0000' is negative"),
    (17, 0, "0029.0000", "frame 0029.0000 comes before the previous row's 30"),
    (16, 0, "1e300", "frame 1e300 at 25 fps is more than a day after the FF file's start"),
])
def test_numbers_are_ascii_as_rms_writes_them(tmp_path, line, field, value, phrase):
    """Python's float() took 1_0 as 10 and other scripts' digits as digits, so a garbled file
    registered garbled detections. Numbers are ASCII as RMS formats them; a frame is never
    negative (RMS formats frames unsigned: -0 is damage) nor earlier than the row before, nor so
    large the event time overflows: each a FormatError naming file and line."""
    path = write_detectinfo(tmp_path, NightSpec())
    path.write_text(_replace_field(path.read_text(), line, field, value), encoding="utf-8")
    with pytest.raises(FormatError) as e:
        parse(path)
    assert str(e.value).startswith(f"{path.name} line {line}: "), str(e.value)
    assert phrase in str(e.value), str(e.value)


def test_count_header_with_other_digits_is_not_a_count(tmp_path):
    path = write_detectinfo(tmp_path, NightSpec())
    path.write_text(path.read_text().replace("Meteor Count = 000003", "Meteor Count = \u0660\u0660\u0663"),
                    encoding="utf-8")
    with pytest.raises(FormatError, match="line 1: not an FTPdetectinfo file"):
        parse(path)


def test_rows_rms_writes_are_read_nan_padded_equal_frames_and_exponents(tmp_path):
    """What RMS does write still reads: a NaN it could not compute, zero-padded (000nan,
    +0000nan: the row is skipped, as RMS's reader does), a frame repeated, an exponent."""
    path = write_detectinfo(tmp_path, NightSpec())
    text = _replace_field(path.read_text(), 17, 3, "00000nan")
    text = _replace_field(text, 18, 4, "+0000nan")
    text = _replace_field(text, 20, 0, "0033.0000")  # the same frame as the row before
    text = _replace_field(text, 21, 1, "6.1e2")
    path.write_text(text)
    first = parse(path).detections[0]
    assert len(first.rows) == 10
    assert [r.frame for r in first.rows[:4]] == [30.0, 33.0, 33.0, 35.0] and first.rows[3].x == 610.0


def test_random_non_ascii_damage_in_numbers_is_always_refused(tmp_path):
    """150 seeded mutations, each putting into one number of a detection a character that is
    no part of an ASCII number (49 of 150 such were ingested before): every one refused,
    naming the line it is on."""
    import random
    rng = random.Random(20260812)
    clean = detectinfo_text(NightSpec()).splitlines(keepends=True)
    path = tmp_path / f"FTPdetectinfo_{night_name()}.txt"
    damage = ["_", "\u0661", "\u06f5", "\u0967", "\uff15", "\u00b2", "\u00a0", "x", ",", "\u2212"]
    number_lines = [i for i, l in enumerate(clean) if i >= 14 and not l.startswith(("-", "FF_", "Recal"))]
    parameter_lines = {i + 1 for i, l in enumerate(clean) if l.startswith("Recal")}
    for _ in range(150):
        i = rng.choice(number_lines)
        fields = clean[i].split()
        f = rng.randrange(1 if i in parameter_lines else 0, len(fields))  # the camera code is no number
        at = rng.randrange(1, len(fields[f])) if len(fields[f]) > 1 else rng.choice([0, 1])
        fields[f] = fields[f][:at] + rng.choice(damage) + fields[f][at:]
        lines = list(clean)
        lines[i] = " ".join(fields) + "\n"
        path.write_text("".join(lines), encoding="utf-8")
        with pytest.raises(FormatError) as e:
            parse(path)
        assert str(e.value).startswith(f"{path.name} line {i + 1}: "), (lines[i], str(e.value))


@pytest.mark.parametrize("key, value, message", [
    ("latitude", "4_5.125", ".config: [System] latitude: '4_5.125' is not a number"),
    ("latitude", "\u0664\u0665.125", ".config: [System] latitude: '\u0664\u0665.125' is not a number"),
    ("width", "1280.5", ".config: [Capture] width: '1280.5' is not a whole number"),
    ("stationID", "XX\u0661\u0661", ".config: [System] stationID: 'XX\u0661\u0661' is not a station id"),
])
def test_config_numbers_and_station_are_ascii(tmp_path, key, value, message):
    folder = write_night(tmp_path)
    config = folder / ".config"
    lines = [f"{key}: {value}" if l.startswith(f"{key}:") else l for l in config.read_text().splitlines()]
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(FormatError) as e:
        read_config(config)
    assert str(e.value).startswith(message), str(e.value)


def test_ff_name_with_other_digits_is_no_ff_name():
    from meteorpi_rms.names import parse_ff_name
    assert parse_ff_name("FF_XX0001_20260812_190211_123_0000000.fits") is not None
    assert parse_ff_name("FF_XX0001_20260812_190211_\u0661\u0662\u0663_0000000.fits") is None


def test_ingest_of_a_number_with_an_underscore_registers_nothing(node, tmp_path):
    folder = write_night(tmp_path)
    ftp = folder / f"FTPdetectinfo_{night_name()}.txt"
    ftp.write_text(_replace_field(ftp.read_text(), 16, 7, "000_001000"))
    [result] = ingest_paths(node, [folder])
    assert (result.state, result.message) == ("failed", f"{folder.name}: {ftp.name} line 16: row: '000_001000' "
                                                        "is not a number")
    assert counts(node) == (0, 0, 0)


def test_config_reads_rms_syntax_and_names_a_missing_key(tmp_path):
    """':' and '=' separators, '; comments' after values, a GStreamer pipeline full of '=';
    and a config without latitude is refused naming the key."""
    folder = write_night(tmp_path)
    config = read_config(folder / ".config")
    assert (config.station_id, config.latitude, config.longitude, config.fps) == ("XX0001", 45.125, -81.5, 25.0)
    text = (folder / ".config").read_text()
    (folder / ".config").write_text("\n".join(l for l in text.splitlines() if not l.startswith("latitude")))
    with pytest.raises(FormatError, match=r"^\.config: \[System\] latitude is missing$"):
        read_config(folder / ".config")


# -- what becomes what --------------------------------------------------------------------------

def test_night_becomes_status_events_and_files(node, tmp_path):
    """One status, one meteorpi:meteor event per detection (with its FF and FR when present,
    none when RMS deleted the FF), night products as stand-alone rms:* files."""
    folder = write_night(tmp_path)
    result = ingest_night(node, folder)
    assert (result.registered.statuses, result.registered.events, result.registered.files) == (1, 3, 11)
    status = node.get_camera_status_by_id(node.search_events(_all())["events"][0].status_id)
    assert (status.camera_id, status.location.lat, status.location.long) == ("XX0001", 45.125, -81.5)
    assert (status.orientation.az, status.orientation.alt, status.orientation.rot) == (123.4, 55.0, -3.2)
    events = node.search_events(_all())["events"]
    assert [str(e.event_type) for e in events] == ["meteorpi:meteor"] * 3
    assert [[f.file_name for f in e.files] for e in events] == [
        [ff_name("XX0001", ff_start(NightSpec(), 3))], [],
        [ff_name("XX0001", ff_start(NightSpec(), 12)), "FR_XX0001_20260812_190416_003_0000512.bin"]]
    assert [str(f.semantic_type) for f in events[2].files] == ["rms:ff", "rms:fr"]
    meta = {str(m.key): m.value for m in events[0].meta}
    assert meta["meteorpi:peak_magnitude"] == -1.5 and meta["meteorpi:duration"] == 0.44
    assert meta["rms:frames"] == 12 and meta["rms:fps"] == 25 and meta["rms:meteor_number"] == 1
    assert meta["meteorpi:start_dec"] == -12.25 and meta["rms:version"] == "RMS 1.0"
    assert events[0].event_time == ff_start(NightSpec(), 3) + _dt.timedelta(seconds=1.2)
    standalone = {f.file_name: str(f.semantic_type) for f in node.search_files(_all_files())["files"]
                  if not f.file_name.startswith(("FF_", "FR_"))}
    name = night_name()
    assert standalone == {
        ".config": "rms:config", f"FTPdetectinfo_{name}.txt": "rms:ftpdetectinfo",
        "platepar_cmn2010.cal": "rms:platepar", "platepars_all_recalibrated.json": "rms:platepars_recalibrated",
        f"CALSTARS_{name}.txt": "rms:calstars", f"{name}_stack_3_meteors.jpg": "rms:stack",
        f"{name}_FF_thumbs.jpg": "rms:thumbnails", f"{name}_timelapse.mp4": "rms:timelapse"}
    held = node.file_path_for_id(events[0].files[0].file_id)
    assert held.read_bytes() == (folder / events[0].files[0].file_name).read_bytes()


def _all():
    from meteorpi_model import EventSearch
    return EventSearch(limit=0)


def _all_files():
    from meteorpi_model import FileRecordSearch
    return FileRecordSearch(limit=0)


def test_again_or_a_copy_elsewhere_registers_nothing_new(node, tmp_path):
    """Ids come from the data: the same night twice, copied under another folder name, or
    archived by RMS without some of its FF files, maps to what is held."""
    folder = write_night(tmp_path / "a")
    ingest_night(node, folder)
    held = counts(node)
    copy = tmp_path / "elsewhere" / "night-copy"
    shutil.copytree(folder, copy)
    archived = tmp_path / "ArchivedFiles" / folder.name  # RMS kept only some FF files there
    shutil.copytree(folder, archived)
    (archived / ff_name("XX0001", ff_start(NightSpec(), 12))).unlink()
    for again in (folder, copy, archived):
        result = ingest_night(node, again)
        assert (result.registered.statuses, result.registered.events, result.registered.files) == (0, 0, 0)
    assert counts(node) == held
    assert not list((node.file_store.root / "tmp").iterdir())


def test_rerun_that_changed_a_file_registers_the_new_version_beside_the_old(node, tmp_path):
    """RMS re-ran: the FF of meteor 1 changed, and meteor 3's rows (so the FTPdetectinfo).
    The new versions are kept beside the old ones; nothing held is overwritten."""
    folder = write_night(tmp_path)
    ingest_night(node, folder)
    before = {f.file_id: f for f in node.search_files(_all_files())["files"]}
    events_before = {e.event_id: e for e in node.search_events(_all())["events"]}
    ff = folder / ff_name("XX0001", ff_start(NightSpec(), 3))
    ff.write_bytes(os.urandom(4096))
    ftp = folder / f"FTPdetectinfo_{night_name()}.txt"
    ftp.write_text(detectinfo_text(NightSpec(meteors=[Meteor(3), Meteor(7, keep_ff=False),
                                                      Meteor(12, fr=True, magnitude0=0.5)])))
    result = ingest_night(node, folder)
    # meteor 3's new event (its files are held), meteor 1's new FF and the new FTPdetectinfo
    assert (result.registered.events, result.registered.files) == (1, 2)
    after = {f.file_id: f for f in node.search_files(_all_files())["files"]}
    assert set(before) < set(after)
    names = sorted(f.file_name for f in after.values())
    assert names.count(ff.name) == 2 and names.count(ftp.name) == 2
    events_after = {e.event_id: e for e in node.search_events(_all())["events"]}
    assert set(events_before) < set(events_after) and len(events_after) == 4
    assert all(events_after[i] == e for i, e in events_before.items())  # the old ones unchanged
    assert ingest_night(node, folder).registered == dataclasses.replace(result.registered, statuses=0, events=0,
                                                                        files=0)


def test_pointing_change_makes_a_new_status_and_the_same_config_reuses_it(node, tmp_path):
    spec = NightSpec()
    ingest_night(node, write_night(tmp_path, spec))
    later = dataclasses.replace(spec, start=NIGHT_START + _dt.timedelta(days=1))
    ingest_night(node, write_night(tmp_path, later))
    assert counts(node)[0] == 1
    moved = dataclasses.replace(spec, start=NIGHT_START + _dt.timedelta(days=2), az=200.0)
    assert ingest_night(node, write_night(tmp_path, moved)).registered.statuses == 1
    # an older night of the first configuration, ingested late, still finds a status valid then
    older = dataclasses.replace(spec, start=NIGHT_START - _dt.timedelta(days=1))
    result = ingest_night(node, write_night(tmp_path, older))
    assert (result.registered.statuses, result.registered.events) == (1, 3)
    assert ingest_night(node, write_night(tmp_path / "copy", older)).registered.statuses == 0


def test_night_in_progress_is_skipped_and_empty_night_is_fine(node, tmp_path):
    working = write_night(tmp_path / "a")
    (working / "rms_queue_bkup_20260812_190211.pickle").write_bytes(b"queue")
    fresh = write_night(tmp_path / "b", dataclasses.replace(NightSpec(), start=NIGHT_START + _dt.timedelta(days=1)))
    for f in fresh.glob("FTPdetectinfo_*"):
        f.unlink()
    results = list(ingest_paths(node, [working, fresh]))
    assert [r.state for r in results] == ["skipped", "skipped"]
    assert "queue backup" in results[0].message and "no FTPdetectinfo yet" in results[1].message
    assert counts(node) == (0, 0, 0)
    empty = write_night(tmp_path / "c", NightSpec(meteors=[]))
    result = ingest_night(node, empty)
    assert (result.registered.statuses, result.registered.events, result.registered.files) == (1, 0, 8)


def test_night_still_being_written_waits_for_its_files_to_settle(node, tmp_path):
    """RMS copies a finished night to ArchivedFiles: files changed within the settle time
    mean the copy may be incomplete, so the night is left for the next poll."""
    folder = write_night(tmp_path)
    with pytest.raises(NightInProgress, match="still being written"):
        ingest_night(node, folder, settle_seconds=60)
    assert counts(node) == (0, 0, 0)
    past = time.time() - 120
    for f in folder.iterdir():
        os.utime(f, (past, past))
    assert ingest_night(node, folder, settle_seconds=60).registered.events == 3


def test_garbled_night_registers_nothing(node, tmp_path):
    folder = write_night(tmp_path)
    ftp = folder / f"FTPdetectinfo_{night_name()}.txt"
    ftp.write_text(_garble(ftp.read_text(), "row with 10 fields"))
    [result] = ingest_paths(node, [folder])
    assert result.state == "failed"
    assert result.message == (f"{folder.name}: {ftp.name} line 18: a row has 10 fields, expected 9 or 12 "
                              "(frame x y ra dec az alt intensity mag [background snr saturated])")
    assert counts(node) == (0, 0, 0)


@pytest.mark.parametrize("name, text, message", [
    ("platepar_cmn2010.cal", '{"az_centre": 12.5,\n "alt_centre": }', "platepar_cmn2010.cal line 2: not JSON: "),
    ("platepar_cmn2010.cal", '{"az_centre": "north"}', "platepar_cmn2010.cal: az_centre: 'north' is not a number"),
    (".config", "[System]\nstationID: XX0001\nlatitude: 95 ; north\n", ".config: [System] latitude: '95' is out of range"),
    (".config", "[System]\nstationID: XX0002\nlatitude: 45\nlongitude: 13\n[Capture]\nfps: 25\nwidth: 1\nheight: 1\n",
     ".config: stationID XX0002 differs from the night's station XX0001"),
])
def test_garbled_config_or_platepar_refuses_the_night_naming_the_file(node, tmp_path, name, text, message):
    folder = write_night(tmp_path)
    (folder / name).write_text(text)
    [result] = ingest_paths(node, [folder])
    assert result.state == "failed" and result.message.startswith(f"{folder.name}: {message}"), result.message
    assert counts(node) == (0, 0, 0)


def test_recalibrated_platepars_alone_give_the_pointing_and_a_failed_entry_is_skipped(node, tmp_path):
    folder = write_night(tmp_path)
    (folder / "platepar_cmn2010.cal").unlink()
    recalibrated = folder / "platepars_all_recalibrated.json"
    entries = json.loads(recalibrated.read_text())
    entries = {"FF_XX0001_20260812_190000_000_0000000.fits": {"az_centre": None}, **entries}
    recalibrated.write_text(json.dumps(entries))
    ingest_night(node, folder)
    status = node.get_camera_status_by_id(node.search_events(_all())["events"][0].status_id)
    assert (status.orientation.az, status.orientation.alt) == (123.4, 55.0)


def test_file_deleted_while_read_skips_the_night_for_a_retry(node, tmp_path):
    """RMS housekeeping deletes an FF while we copy the night: nothing is registered, the
    night is skipped, and the next attempt takes the night as it then is."""
    folder = write_night(tmp_path)
    victim = folder / ff_name("XX0001", ff_start(NightSpec(), 12))

    def housekeeping(path, size):
        if victim.exists():
            victim.unlink()

    with pytest.raises(NightVanished, match=f"{victim.name} disappeared while read"):
        ingest_night(node, folder, on_stored=housekeeping)
    assert counts(node) == (0, 0, 0)
    assert not list((node.file_store.root / "tmp").iterdir())
    assert ingest_night(node, folder).registered.events == 3


def test_full_disk_is_a_clear_error_and_registers_nothing(node, tmp_path):
    """The store's disk refuses writes (the kernel's EFBIG under RLIMIT_FSIZE, as a full disk
    would): one clear error, no half-registered night, no temp file left."""
    folder = write_night(tmp_path, NightSpec(ff_size=64 * 1024))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, hard))
    try:
        with pytest.raises(StoreWriteFailed, match="cannot write to the file store"):
            ingest_night(node, folder)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert counts(node) == (0, 0, 0)
    assert not list((node.file_store.root / "tmp").iterdir())


# -- files that are not regular files ------------------------------------------------------------

def _bounded(call, seconds: float = 30.0):
    """Run ``call`` in a thread; (result, exception), failing the test if it still runs after
    ``seconds`` (a FIFO hung the ingest, a link to /dev/zero never ended it)."""
    import threading
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = call()
        except BaseException as e:  # handed to the test
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still ingesting after {seconds:g} s"
    return outcome.get("result"), outcome.get("error")


# If a refusal under test were missing, reading /dev/zero would fill the disk (into the store)
# or the memory (a product read whole, to parse it): writes past 64 MiB fail (EFBIG) and the
# address space stops at 4 GiB (MemoryError), so such a test fails instead of harming the machine.
FILE_SIZE_LIMIT, ADDRESS_SPACE_LIMIT = 64 * 1024 ** 2, 4 * 1024 ** 3


def _limit_resources():
    """For a ``meteorpi`` child: the limits above."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, resource.RLIM_INFINITY))
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, resource.RLIM_INFINITY))


@pytest.fixture
def file_size_limit():
    """The limits above, in this process for the test's duration."""
    limits = {which: resource.getrlimit(which) for which in (resource.RLIMIT_FSIZE, resource.RLIMIT_AS)}
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, limits[resource.RLIMIT_FSIZE][1]))
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, limits[resource.RLIMIT_AS][1]))
    yield
    for which, (soft, hard) in limits.items():
        resource.setrlimit(which, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)


def _make_irregular(path: Path, kind: str, tmp_path: Path) -> str:
    """Replace ``path`` by something that is not a regular file; how the refusal calls it."""
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
        return "a symbolic link"
    if kind == "fifo":
        os.mkfifo(path)
        return "a FIFO"
    if kind == "link to another file":
        secret = tmp_path / "shadow"
        secret.write_text("root:$6$secret:19000:0:99999:7:::\n")
        path.symlink_to(secret)
        return "a symbolic link"
    if kind == "dangling link":
        path.symlink_to(tmp_path / "gone")
        return "a dangling symbolic link"
    path.mkdir()
    return "a folder"


IRREGULAR = ["link to /dev/zero", "fifo", "link to another file", "dangling link", "folder"]


@pytest.mark.parametrize("which", ["FF", ".config", "FTPdetectinfo", "platepar"])
@pytest.mark.parametrize("kind", IRREGULAR)
def test_night_file_that_is_not_a_regular_file_refuses_the_night_naming_it(node, tmp_path, file_size_limit,
                                                                           which, kind):
    """RMS writes only regular files. A link (to /dev/zero: copied at 400 MB/s for ever; to
    /etc/shadow: ingested as the product; dangling: retried for ever as RMS housekeeping), a
    FIFO (hung for ever) or a folder named like a product refuses the night in one line
    naming the file, promptly; nothing is registered, no temp file is left."""
    folder = write_night(tmp_path / "night")
    path = {"FF": folder / ff_name("XX0001", ff_start(NightSpec(), 3)), ".config": folder / ".config",
            "FTPdetectinfo": folder / f"FTPdetectinfo_{night_name()}.txt",
            "platepar": folder / "platepar_cmn2010.cal"}[which]
    described = _make_irregular(path, kind, tmp_path)
    try:
        results, error = _bounded(lambda: list(ingest_paths(node, [folder])))
    finally:
        if kind == "fifo":  # a reader stuck in open (the refusal missing) gets an end
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
    assert error is None, repr(error)
    assert [(r.state, r.message) for r in results] == [("failed", (
        f"{folder.name}: {path.name}: not a regular file ({described}): RMS writes only regular files, "
        "so the night is refused"))]
    assert counts(node) == (0, 0, 0)
    assert not list((node.file_store.root / "tmp").iterdir())


@pytest.mark.parametrize("kind", ["link to /dev/zero", "fifo", "link to another file"])
def test_file_swapped_after_the_listing_is_refused_where_it_is_opened(node, tmp_path, file_size_limit, kind):
    """The listing saw regular files; an FF is swapped before its copy (and a product before it
    is parsed): the open itself refuses it (O_NOFOLLOW, fstat), so the swap is caught too."""
    from meteorpi_rms import NotRegularFile
    from meteorpi_rms.config import read_config, read_platepar
    folder = write_night(tmp_path / "night")
    ff = folder / ff_name("XX0001", ff_start(NightSpec(), 12))
    described = "a FIFO" if kind == "fifo" else "a symbolic link"

    def swap(plan):
        _make_irregular(ff, kind, tmp_path)

    try:
        _, error = _bounded(lambda: ingest_night(node, folder, on_plan=swap))
        assert isinstance(error, NotRegularFile), repr(error)
        assert str(error) == (f"{ff.name}: not a regular file ({described}): RMS writes only regular files, "
                              "so the night is refused")
        for reader, name in [(parse, f"FTPdetectinfo_{night_name()}.txt"), (read_config, ".config"),
                             (read_platepar, "platepar_cmn2010.cal")]:
            _make_irregular(folder / name, kind, tmp_path)
            _, error = _bounded(lambda: reader(folder / name))
            assert isinstance(error, NotRegularFile) and error.path.name == name, repr(error)
    finally:
        for fifo in [p for p in folder.iterdir() if p.is_fifo()]:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
    assert counts(node) == (0, 0, 0)
    assert not list((node.file_store.root / "tmp").iterdir())


@pytest.mark.parametrize("kind", ["link to /dev/zero", "dangling link"])
def test_cli_ff_that_is_a_link_is_one_error_line_and_status_1(node, tmp_path, kind):
    """`meteorpi ingest rms <night>` with an FF linked to /dev/zero ended never, filling the
    store's tmp; with a dangling FF link it said "will retry" with status 0 for ever. Both are
    one Error line naming the file, status 1, and the store's tmp stays empty."""
    folder = write_night(tmp_path / "night")
    ff = folder / ff_name("XX0001", ff_start(NightSpec(), 3))
    described = _make_irregular(ff, kind, tmp_path)
    proc = meteorpi("ingest", "rms", str(folder), env=cli_env(node), timeout=60, preexec_fn=_limit_resources)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"Error: {folder.name}: {ff.name}: not a regular file ({described}): RMS writes only regular files, "
        "so the night is refused"], proc.stderr
    tmp = node.file_store.root / "tmp"
    assert sum(p.stat().st_size for p in tmp.iterdir()) == 0
    assert counts(node) == (0, 0, 0)


def test_interrupted_ingest_leaves_no_temp_file_and_the_next_run_takes_the_night(node, tmp_path, monkeypatch, ctrl_c_raises):
    """Ctrl-C while a large night is copied: nothing registered (as before), and now also no
    temp file left in the store's tmp (~950 MB stayed until the next start) and no copy thread
    still running; the next run takes the night whole."""
    import threading
    from meteorpi_db import FileStore
    spec = NightSpec(meteors=[Meteor(block, meteor_number=block + 1) for block in range(40)], ff_size=64 * 1024)
    folder = write_night(tmp_path, spec)
    real = FileStore._copy_through

    def slow(self, source, incoming):  # a large night: 40 FF files at 0.1 s each, 4 at once
        real(self, source, incoming)
        time.sleep(0.1)

    monkeypatch.setattr(FileStore, "_copy_through", slow)
    tmp = node.file_store.root / "tmp"
    interrupted_at = []

    def ctrl_c():
        wait_for(lambda: len(os.listdir(tmp)) >= 6, 20, "copies under way")
        interrupted_at.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    helper = threading.Thread(target=ctrl_c, daemon=True)
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        ingest_night(node, folder)
        time.sleep(5)  # done before the interrupt came: fail below, not here
    stopped_after = time.monotonic() - interrupted_at[0]
    helper.join()
    assert stopped_after < 0.5, f"the copies went on for {stopped_after:.2f} s after Ctrl-C"
    assert not list(tmp.iterdir())
    assert not [t for t in threading.enumerate() if t.name.startswith("meteorpi-copy")]
    assert counts(node) == (0, 0, 0)
    monkeypatch.undo()
    assert ingest_night(node, folder).registered.events == 40


# -- the command ----------------------------------------------------------------------------------

def _data_folder(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """RMS's data folder: a good night (archived and captured), a garbled one, one in progress."""
    data = tmp_path / "RMS_data"
    good = write_night(data / "ArchivedFiles")
    write_night(data / "CapturedFiles")
    bad = write_night(data / "ArchivedFiles", dataclasses.replace(NightSpec(), start=NIGHT_START + _dt.timedelta(days=1)))
    ftp = next(bad.glob("FTPdetectinfo_*[0-9].txt"))
    ftp.write_text(_garble(ftp.read_text(), "text in a number"))
    working = write_night(data / "CapturedFiles", dataclasses.replace(NightSpec(), start=NIGHT_START + _dt.timedelta(days=2)))
    (working / "rms_queue_bkup_x.pickle").write_bytes(b"q")
    return data, good, bad, working


def test_cli_summarises_each_night_and_refuses_garbled_ones_in_one_line(node, tmp_path):
    data, good, bad, working = _data_folder(tmp_path)
    proc = meteorpi("ingest", "rms", str(data), env=cli_env(node))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines()[0].startswith(
        f"{good.name}: 3 detection(s), 11 file(s) (")
    assert "-> 3 new event(s), 11 new file(s), 1 new status in" in proc.stdout
    errors = [l for l in proc.stderr.splitlines() if l.startswith("Error:")]
    assert errors == [f"Error: {bad.name}: {next(bad.glob('FTPdetectinfo_*[0-9].txt')).name} line 16: "
                      "row: '06x0.00' is not a number"], proc.stderr
    assert f"skipped {working}: in progress" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert counts(node) == (1, 3, 11)
    again = meteorpi("ingest", "rms", str(good), env=cli_env(node))
    assert again.returncode == 0 and again.stdout.rstrip().endswith("(nothing new)"), again.stdout


def test_cli_paths_that_are_no_nights_are_one_line_each(node, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    proc = meteorpi("ingest", "rms", str(tmp_path / "missing"), str(tmp_path / "notes.txt"), str(tmp_path / "empty"),
                    env=cli_env(node))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"Error: {tmp_path / 'missing'}: no such folder",
        f"Error: {tmp_path / 'notes.txt'}: not a folder (give a night folder or RMS's data folder)",
        f"skipped {tmp_path / 'empty'}: no RMS night folders found"], proc.stderr


def test_cli_full_disk_is_one_line(node, tmp_path):
    folder = write_night(tmp_path, NightSpec(ff_size=256 * 1024))

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (128 * 1024, resource.RLIM_INFINITY))

    proc = meteorpi("ingest", "rms", str(folder), env=cli_env(node), preexec_fn=limit)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: cannot write to the file store at "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert counts(node) == (0, 0, 0)


def test_cli_follow_ingests_each_night_once_when_finished(node, tmp_path):
    data = tmp_path / "RMS_data"
    first = write_night(data / "CapturedFiles")
    proc = start_meteorpi("ingest", "rms", str(data), "--follow", "--interval", "1", "--settle", "0",
                          env=cli_env(node))
    try:
        wait_for(lambda: counts(node)[1] == 3, 60, "the first night")
        second = write_night(data / "CapturedFiles", dataclasses.replace(NightSpec(), start=NIGHT_START + _dt.timedelta(days=1)))
        marker = second / "rms_queue_bkup_x.pickle"
        marker.write_bytes(b"q")
        time.sleep(2.5)
        assert counts(node)[1] == 3  # in progress: not yet
        marker.unlink()
        wait_for(lambda: counts(node)[1] == 6, 60, "the second night once finished")
        time.sleep(2.5)  # more polls: nothing twice
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert out.count(f"{first.name}: 3 detection(s)") == 1 and out.count(f"{second.name}: 3 detection(s)") == 1, out
    assert out.count(f"skipped {second}: in progress") == 1, out


@pytest.mark.parametrize("option, value", [("--interval", "nan"), ("--interval", "-nan"), ("--settle", "nan"),
                                           ("--settle", "inf")])
def test_cli_refuses_a_float_option_that_is_not_finite(node, tmp_path, option, value):
    """click's FloatRange lets NaN through (every comparison with it is false): --interval nan
    polled without a pause at 97% CPU for ever, --settle nan took nights still being written.
    Refused at once as a usage error naming the option."""
    data = tmp_path / "RMS_data"
    write_night(data / "CapturedFiles")
    proc = meteorpi("ingest", "rms", str(data), "--follow", option, value, env=cli_env(node), timeout=30)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"Error: Invalid value for '{option}': " in proc.stderr and "is not" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert counts(node) == (0, 0, 0)


def test_follow_and_ingest_paths_refuse_times_that_are_not_finite(node, tmp_path):
    """The same rule for callers of the library, so no caller can make the loop spin."""
    import threading
    from meteorpi_rms.follow import follow
    with pytest.raises(ValueError, match="interval nan"):
        follow(node, [tmp_path], float("nan"), threading.Event(), lambda result: None)
    with pytest.raises(ValueError, match="settle_seconds inf"):
        follow(node, [tmp_path], 1.0, threading.Event(), lambda result: None, settle_seconds=float("inf"))
    with pytest.raises(ValueError, match="settle_seconds nan"):
        list(ingest_paths(node, [tmp_path], settle_seconds=float("nan")))


def test_empty_path_is_refused_not_taken_for_the_current_folder(node, tmp_path):
    """`meteorpi ingest rms ''` (an unset variable in a script) ingested the folder the command
    ran in. Refused, in the command and in ingest_paths."""
    write_night(tmp_path)  # what the current folder holds
    proc = meteorpi("ingest", "rms", "", env=cli_env(node), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Error: Invalid value for 'PATHS...': an empty path (it would mean the current folder)" in proc.stderr
    [result] = ingest_paths(node, [""])
    assert (result.state, result.message) == ("failed", "an empty path (it would mean the current folder): "
                                                        "give a night folder or RMS's data folder")
    assert counts(node) == (0, 0, 0)


def test_cli_ctrl_c_during_a_large_night_exits_at_once_leaving_no_temp_file(node, tmp_path):
    """The real command, Ctrl-C once its copies are under way: it exits within seconds (a
    KeyboardInterrupt inside the copy pool's thread start left a worker that hung the exit),
    status 1 and one line, with nothing in the store's tmp (the finished copies' temp files
    stayed: ~950 MB for a large night) and nothing registered; the next run takes the night."""
    spec = NightSpec(meteors=[Meteor(block, meteor_number=block + 1) for block in range(120)], ff_size=512 * 1024)
    folder = write_night(tmp_path, spec)
    tmp = node.file_store.root / "tmp"
    proc = start_meteorpi("ingest", "rms", str(folder), env=cli_env(node), stdout=subprocess.PIPE)
    try:
        wait_for(lambda: len(os.listdir(tmp)) >= 2 or proc.poll() is not None, 60, "copies under way", 0.002)
        assert proc.poll() is None, "the night was done before Ctrl-C: make it larger"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, out
    assert out.strip().splitlines()[-1] == "Aborted!" and "Traceback" not in out, out
    assert not list(tmp.iterdir())
    assert counts(node) == (0, 0, 0)
    again = meteorpi("ingest", "rms", str(folder), env=cli_env(node))
    assert again.returncode == 0 and "-> 120 new event(s)" in again.stdout, again.stdout + again.stderr


# -- end to end -------------------------------------------------------------------------------------

def test_ingested_night_reaches_central_byte_for_byte_and_again_sends_nothing(node, central, tmp_path):
    """`meteorpi ingest rms` on the node, `meteorpi export run --once` to the central archive:
    the status, events and files arrive byte for byte; ingesting again (and the captured copy
    of the night) sends nothing more."""
    data, good, _, _ = _data_folder(tmp_path)
    env = cli_env(node)
    assert meteorpi("ingest", "rms", str(good), env=env).returncode == 0
    add_export(node, central.import_url, "event")
    add_export(node, central.import_url, "file")
    run = meteorpi("export", "run", "--once", env=env)
    assert run.returncode == 0, run.stderr
    assert "completed 11, failed 0" in run.stdout + run.stderr
    check = central.check(node)
    assert check.ok, check.problems
    assert counts(central.db) == counts(node) == (1, 3, 11)
    again = meteorpi("ingest", "rms", str(good), str(tmp_path / "RMS_data" / "CapturedFiles"), env=env)
    assert again.returncode == 0 and again.stdout.count("(nothing new)") == 2, again.stdout
    run = meteorpi("export", "run", "--once", env=env)
    assert run.returncode == 0 and "completed 0, failed 0" in run.stdout + run.stderr, run.stdout + run.stderr
    assert " 0 B sent" in run.stdout + run.stderr


def test_rms_ingest_depends_on_model_and_db_only():
    """A camera node ingesting RMS nights loads neither the server nor an HTTP client."""
    import subprocess
    import sys
    code = ("import sys, meteorpi_rms.ingest, meteorpi_rms.follow; "
            "print(sorted(m for m in ('flask', 'requests', 'werkzeug', 'meteorpi_server') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
