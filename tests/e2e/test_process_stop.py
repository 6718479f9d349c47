"""`familiar run` as a real process stopped by a signal: exit status 0, the database closed, no traceback, and a
reply that was being generated when SIGTERM came is still printed and logged.

Generation goes to a fake OpenAI-compatible server in this test (no model), which answers slowly on purpose.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ANSWER = "The candle gutters, but I finish my sentence."
ANSWER_DELAY_S = 1.0  # the fake model server's time per answer: the signal lands inside it
START_TIMEOUT_S = 120.0  # the process's start-up (imports, the classifier) on a busy machine
EXIT_TIMEOUT_S = 30.0


class FakeModelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    server: FakeModelServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.received.set()
        time.sleep(ANSWER_DELAY_S)
        body = json.dumps(
            {"choices": [{"message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def model_server() -> Iterator[FakeModelServer]:
    server = FakeModelServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _config(tmp_path: Path, server: FakeModelServer, *, console: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[bot]\ndata_dir = "{tmp_path / "data"}"\nlog_level = "INFO"\n'
        f'[model]\nbackend = "openai"\n'
        f'[openai]\nbase_url = "http://127.0.0.1:{server.server_address[1]}/v1"\nmodel = "fake"\n'
        "stream = false\nretries = 0\n"
        f'[console]\nenabled = "{console}"\n',
        encoding="utf-8",
    )
    return path


def _start(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(config), "run"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_line(stream: object, needle: str, seen: list[str]) -> None:
    """Read `stream` until a line holds `needle` (keeping what was read)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = stream.readline()  # type: ignore[attr-defined]
        if not line:
            break
        seen.append(line)
        if needle in line:
            return
    raise AssertionError(f"{needle!r} never appeared; the process said:\n{''.join(seen)}")


def test_sigterm_while_a_console_line_is_answered_finishes_it(tmp_path, model_server):
    proc = _start(_config(tmp_path, model_server, console="on"))
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("Are you still awake?\n")
        proc.stdin.flush()  # stdin stays open: only the signal ends this process
        assert model_server.received.wait(START_TIMEOUT_S), "the line never reached the model server"
        proc.send_signal(signal.SIGTERM)  # mid-generation
        out, err = proc.communicate(timeout=EXIT_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"Wick: {ANSWER}" in out.splitlines(), out
    assert "closed database" in err and "Traceback" not in err, err
    db = sqlite3.connect(tmp_path / "data" / "familiar.db")
    try:
        rows = db.execute(
            "SELECT role, content FROM messages WHERE platform = 'console' ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    assert rows == [("user", "Are you still awake?"), ("assistant", ANSWER)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_an_idle_process_cleanly(tmp_path, model_server, sig):
    # Console off and no platform enabled: the process only waits for a signal.
    proc = _start(_config(tmp_path, model_server, console="off"))
    seen: list[str] = []
    try:
        _wait_for_line(proc.stderr, "ready: character", seen)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=EXIT_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = "".join(seen) + err
    assert proc.returncode == 0, err
    assert "closed database" in err and "Traceback" not in err, err
    assert not model_server.received.is_set()
