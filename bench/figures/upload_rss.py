"""Server memory while receiving one big file: uploads must stream, never sit in RAM.

A camera may upload an hour of video in one file. The server (master plus workers, as
``meteorpi serve`` runs it) is warmed up with small uploads, its idle RSS taken, then one file
of 1 GiB (256 MiB with --quick) is posted to ``/import/data/<id>/<md5>`` by a client that
streams it from disk (requests-toolbelt's MultipartEncoder over an open file) while a thread
samples the summed RSS every 20 ms. The figure is peak minus idle, in MiB.
"""
from __future__ import annotations

import hashlib
import random
import statistics
import threading
import time
import uuid
from pathlib import Path

import requests
from requests_toolbelt import MultipartEncoder

from .. import ours
from ..harness import Figure
from . import MIB, SEED, Context, log

SAMPLE_SECONDS = 0.02
WARMUP_UPLOADS = 8
WARMUP_BYTES = MIB
TIMEOUT = (10, 600)


def write_random_file(path: Path, size: int, seed: int) -> str:
    """``size`` seeded random bytes at ``path``, written in chunks; returns their MD5."""
    rng, digest = random.Random(seed), hashlib.md5()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = rng.randbytes(min(left, 8 * MIB))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def upload(url: str, path: Path, md5: str) -> str:
    """POST the file streamed from disk; the answer's state."""
    with open(path, "rb") as f:
        body = MultipartEncoder({"file": (path.name, f, "application/octet-stream")})
        answer = requests.post(f"{url}/import/data/{uuid.uuid4().hex}/{md5}", data=body,
                               headers={"Content-Type": body.content_type},
                               auth=(ours.IMPORT_USER, ours.IMPORT_PASSWORD), timeout=TIMEOUT)
    try:
        return answer.json().get("state", f"HTTP {answer.status_code}")
    except ValueError:
        return f"HTTP {answer.status_code}"


class RssSampler(threading.Thread):
    """Samples the server's summed RSS until stopped; ``peak`` is the largest sample."""

    def __init__(self, server: ours.ServerProcess):
        super().__init__(daemon=True)
        self.server = server
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.server.rss_bytes())
            time.sleep(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._done.set()
        self.join(5)


def _samples(server: ours.ServerProcess, count: int) -> list[int]:
    out = []
    for _ in range(count):
        out.append(server.rss_bytes())
        time.sleep(SAMPLE_SECONDS)
    return out


def run(ctx: Context) -> list[Figure]:
    ours.check_available()
    size = ctx.sizes.upload_bytes
    central = ctx.cluster.site("central")
    central_db = central.open()
    ours.reset_central(central_db)
    central_db.close()
    scratch = ctx.cluster.scratch("upload")
    small, big = scratch / "small.bin", scratch / "big.bin"
    small_md5 = write_random_file(small, WARMUP_BYTES, SEED + 3)
    log(f"upload: writing {size // MIB} MiB to upload")
    big_md5 = write_random_file(big, size, SEED + 4)
    with ours.ServerProcess(central, ctx.cluster.root / "serve-upload.log") as server:
        for _ in range(WARMUP_UPLOADS):  # every worker opens its database and touches the code paths
            if upload(server.url, small, small_md5) != "continue":
                ctx.error("upload: a warm-up upload was not stored")
        time.sleep(0.5)
        idle = statistics.median(_samples(server, 10))
        sampler = RssSampler(server)
        sampler.start()
        try:
            t0 = time.perf_counter()
            state = upload(server.url, big, big_md5)
            seconds = time.perf_counter() - t0
        finally:
            sampler.stop()
    big.unlink(missing_ok=True)
    if state != "continue":
        ctx.error(f"upload: the {size // MIB} MiB file was not stored (answer {state})")
    over = max(sampler.peak - idle, 0) / MIB
    data = (f"one {size // MIB} MiB file via POST /import/data, streamed from disk "
            f"({size / MIB / seconds:.0f} MiB/s); idle RSS {idle / MIB:.0f} MiB (master + workers)")
    return [Figure("upload_peak_rss_mb_over_idle", round(over, 1), "<= 64", data, "MiB")]
