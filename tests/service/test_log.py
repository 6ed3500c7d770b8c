"""``asyncfetch serve``'s logs: one JSON object per line, whatever a client sends."""

from __future__ import annotations

import json
import logging
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from asyncfetch._service.log import JsonFormatter
from tests.service.test_app import JSON, _stop, serve_process

FORGERIES = ["a\nb.bin", "x.bin\r\n2024-01-01 asyncfetch: downloading http://evil/ to /etc",
             "\x1b[2Kred.bin", "a\u2028b.bin", "a\x85b.bin", "a\x00b.bin"]  # fmt: skip


def test_no_input_forges_a_log_line(tmp_path: Path) -> None:
    with serve_process(tmp_path / "cache") as (process, url):
        for name in FORGERIES:
            body = json.dumps({"url": "http://127.0.0.1:9/m.bin\nforged", "name": name}).encode()
            request = urllib.request.Request(f"{url}/fetch", data=body, headers=JSON)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)  # noqa: S310 (loopback)
            refused.value.close()
            assert refused.value.code == 400, name
        for path in ("/files/a%0Ab.bin", "/files/a%0D%0Ab%1B.bin", "/nothing%0A"):
            with pytest.raises(urllib.error.HTTPError) as missing:
                urllib.request.urlopen(url + path, timeout=30)  # noqa: S310 (loopback)
            missing.value.close()
        code, stderr = _stop(process, signal.SIGTERM)
    assert code == 0, stderr
    lines = stderr.splitlines()
    entries = [json.loads(line) for line in lines]  # each line one JSON object
    assert all(isinstance(entry, dict) for entry in entries)
    assert stderr.isascii()
    access = [e for e in entries if "first_request_line" in e]
    assert len(access) == len(FORGERIES) + 3
    assert {e["response_status"] for e in access} == {400, 404}
    assert any("GET /files/a%0Ab.bin" in e["first_request_line"] for e in access)
    assert entries[-1]["message"] == "stopped"


def test_the_formatter_keeps_each_record_on_one_line() -> None:
    record = logging.makeLogRecord(
        {"msg": "fetch failed: %s", "args": ("a\nb\u2028c",), "name": "asyncfetch.serve",
         "levelname": "WARNING", "first_request_line": "GET /\n HTTP/1.1"}
    )  # fmt: skip
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert line.isascii()
    entry = json.loads(line)
    assert entry["message"] == "fetch failed: a\nb\u2028c"
    assert entry["first_request_line"] == "GET /\n HTTP/1.1"
    assert entry["level"] == "warning"
