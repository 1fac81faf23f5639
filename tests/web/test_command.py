"""`vramwise web` as a user starts it, and the rate cap's arithmetic.

Oracles: the URL the command prints is where it answers (a real uvicorn on 127.0.0.1, one request over a socket);
the token bucket against its definition written out (burst tokens, refilled at rate per second).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vramwise.web.limits import RateCap

SRC = Path(__file__).resolve().parents[2] / "src"


def test_the_bucket_allows_its_burst_then_its_rate() -> None:
    now = [100.0]
    cap = RateCap(rate=2.0, burst=3, clock=lambda: now[0])
    assert [cap.wait("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert cap.wait("a") == pytest.approx(0.5)  # one token at 2 a second: half a second away
    assert cap.wait("b") == 0.0  # another address has its own bucket
    now[0] += 0.5
    assert cap.wait("a") == 0.0  # refilled one token (0.5 s x 2/s), taken
    assert cap.wait("a") > 0
    now[0] += 100
    assert [cap.wait("a") for _ in range(4)][-1] > 0  # the refill stops at the burst
    assert RateCap(rate=0, burst=1).wait("a") == 0.0  # off


def test_vramwise_web_prints_its_url_and_answers_there() -> None:
    pytest.importorskip("starlette", reason="the web extra (starlette) is not installed")
    pytest.importorskip("uvicorn", reason="the web extra (uvicorn) is not installed")
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vramwise", "web", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the socket is bound
        found = re.search(r"serving http://127\.0\.0\.1:(\d+)/", line)
        assert found, line
        port = int(found.group(1))
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", "/api/v1/infer", body=json.dumps({"args": {"model": "llama-2-7b"}}),
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                break
            except ConnectionRefusedError:  # bound, not yet accepting: uvicorn is starting
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert response.status == 200
        assert json.loads(response.read())["model"]["name"] == "llama-2-7b"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_port_in_use_is_one_line_and_exit_status_2() -> None:
    pytest.importorskip("starlette", reason="the web extra (starlette) is not installed")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        done = subprocess.run([sys.executable, "-m", "vramwise", "web", "--port", str(port)], capture_output=True,
                              text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f"vramwise: error: cannot serve on 127.0.0.1:{port}: ")
    assert len(done.stderr.strip().splitlines()) == 1
