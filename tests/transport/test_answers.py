"""Error answers: the server's own short message, and what to do next."""

from __future__ import annotations

import pytest

from asyncfetch._transport.answers import server_message, status_error

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
