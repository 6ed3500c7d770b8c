"""Answers on both receive paths (_answers): the server's own short message in an error, what
to do next, and Retry-After as servers really send it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import asyncfetch
from asyncfetch import HTTPStatusError
from asyncfetch._transport.answers import parse_retry_after, server_message, status_error
from tests.faultserver import FaultServer, make_payload
from tests.faultserver.rawserver import RawServer, serve_file
from tests.helpers import no_wait

S3_EXPIRED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message><X-Amz-Expires>3600</X-Amz-Expires></Error>"
)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (S3_EXPIRED, "application/xml", "Request has expired"),
        (S3_EXPIRED, "", "Request has expired"),
        (b'{"error": "invalid_token"}', "application/json", "invalid_token"),
        (b'{"error": {"message": "Token expired"}}', "application/json; charset=utf-8",
         "Token expired"),
        (b"Signature expired: 2024-01-01\nmore", "text/plain", "Signature expired: 2024-01-01"),
        (b"<html><body>Forbidden</body></html>", "text/html", None),
        (b"\x00\x01binary", "application/octet-stream", None),
        (b"", "text/plain", None),
        (b"x" * 5000, "text/plain", "x" * 197 + "..."),
    ],
)  # fmt: skip
def test_the_servers_short_message_is_found(
    body: bytes, content_type: str, message: str | None
) -> None:
    assert server_message(body, content_type) == message


def test_a_signed_url_refused_says_a_fresh_one_resumes() -> None:
    url = "https://b.s3/k?X-Amz-Signature=SECRET&X-Amz-Expires=3600"
    error = status_error(403, "Forbidden", {"content-type": "application/xml"}, url, S3_EXPIRED)

    assert str(error).startswith("https://b.s3/k?X-Amz-Signature=***&X-Amz-Expires=***: ")
    assert "HTTP 403 Forbidden: Request has expired (the signed URL may have expired" in str(error)
    assert "freshly signed URL" in str(error)
    plain = status_error(403, "Forbidden", {}, "https://h/k", b"")
    assert (
        str(plain)
        == "https://h/k: HTTP 403 Forbidden (the file may not exist or needs credentials)"
    )


# Retry-After --------------------------------------------------------------------------------------

DATA = make_payload(4096)


@given(st.text(max_size=40))
def test_retry_after_never_raises(value: str) -> None:
    seconds = parse_retry_after(value, now=0.0)
    assert seconds is None or seconds >= 0


@pytest.mark.parametrize("value", ["\xb9", "\u0661\u0662", "1\xb2"])  # ¹, Arabic-Indic 12, 1²
def test_retry_after_in_other_digits_is_ignored(value: str) -> None:
    assert parse_retry_after(value) is None
    assert parse_retry_after(" 12 ") == 12.0


async def test_a_superscript_retry_after_on_the_fast_path(tmp_path: Path) -> None:
    policy, sleeps = no_wait(attempts=2)
    answers = serve_file(DATA, status=503, extra=["Retry-After: \xb9"])  # ¹ in latin-1
    with RawServer(answers) as server, pytest.raises(HTTPStatusError, match="503") as caught:
        await asyncfetch.fetch(server.url(), tmp_path / "f", retry=policy)
    assert caught.value.retry_after is None
    assert len(server.requests) >= 2  # retried, with the backoff: no Retry-After was read
    assert sleeps.waits
    assert all(w < 5 for w in sleeps.waits)


async def test_a_superscript_retry_after_through_aiohttp(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCFETCH_FAST_PATH", "0")
    server.add_file("f", DATA)
    policy, _ = no_wait(attempts=2)
    with pytest.raises(HTTPStatusError, match="503") as caught:
        await asyncfetch.fetch(
            server.url("f", status=503, retry_after="\xb9"), tmp_path / "f", retry=policy
        )
    assert caught.value.retry_after is None
