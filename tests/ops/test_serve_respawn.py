"""``fluxer-oauth serve`` with several workers outlives the death of one: granian replaces
it instead of shutting the whole server down (tests/concurrency/test_kill_mid_grant.py shows
that such a death leaves no half-done grant)."""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests

from tests.interop.conftest import start_server, stop_server
from tests.soak.test_soak import worker_pids

pytestmark = pytest.mark.serial  # the replacement worker must start within a deadline


def test_a_killed_worker_is_replaced_and_the_server_keeps_answering(tmp_path, backend):
    url = backend.new_database(tmp_path)
    process, base = start_server(tmp_path, url, workers=2)
    try:
        deadline = time.monotonic() + 20
        while len(worker_pids(process)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        before = worker_pids(process)
        assert len(before) == 2
        os.kill(before[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = worker_pids(process)
            if len(now) == 2 and before[0] not in now:
                break
            time.sleep(0.2)
        assert process.poll() is None, "the server went down with one worker"
        assert len(worker_pids(process)) == 2 and before[0] not in worker_pids(process)
        # A replacement counts as a worker as soon as it is forked; on a loaded machine its
        # listener can take a moment more (CI saw one connection refused right then).
        deadline = time.monotonic() + 20
        while not _answers(base) and time.monotonic() < deadline:
            time.sleep(0.2)
        for _ in range(20):  # both workers answer (the kernel spreads connections over them)
            assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    finally:
        stop_server(process)
        backend.drop_database(url)


def _answers(base: str) -> bool:
    try:
        return requests.get(f"{base}/healthz", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False
