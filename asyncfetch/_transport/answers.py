"""HTTP answers, whichever client received them: status errors, Retry-After, Content-Range,
and whether an answer fits the request. Pure functions, no I/O.

Header lookups use lower-case names; both aiohttp's headers and the fast path's parsed
headers answer them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping

from .._errors import HTTPStatusError, ProtocolError
from .._models import ByteRange
from .._userinfo import is_signed, redact_url

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_XML_MESSAGE = re.compile(r"<Message>([^<]{1,300})</Message>")
#: how much of an error answer's body is read for the server's message
ERROR_BODY_LIMIT = 4096
_MESSAGE_LIMIT = 200
_JSON_MESSAGE_KEYS = ("message", "error_description", "error")


class RangeNotHonoured(ProtocolError):
    """The server answered a Range request with the whole file (200)."""

    def __init__(self, message: str, *, url: str | None) -> None:
        super().__init__(message, url=url, retryable=False)


class FileChanged(ProtocolError):
    """An answer disagrees with the probe on the file's size: the file changed since."""

    def __init__(self, message: str, *, url: str | None) -> None:
        super().__init__(message, url=url, retryable=False)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "¹".isdigit() too, and float() refuses it
        return float(value)
    import email.utils  # only for the rare HTTP-date form (~10 ms to import)

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes a-b/total`` → (a, b + 1, total or None); None when absent or malformed."""
    match = _CONTENT_RANGE.fullmatch(value.strip()) if value else None
    if not match:
        return None
    total = None if match[3] == "*" else int(match[3])
    return int(match[1]), int(match[2]) + 1, total


def status_error(
    status: int,
    reason: str | None,
    headers: Mapping[str, str],
    url: str,
    body: bytes = b"",
    *,
    proxy: str | None = None,
) -> HTTPStatusError:
    """The HTTPStatusError for an error answer (with the server's Retry-After, if any), its
    message ending with the server's own, short, when ``body`` (its start) has one.

    ``proxy``: the proxy the request went through, named (masked) in a 407's message."""
    retry_after = parse_retry_after(headers.get("retry-after"))
    said = server_message(body, headers.get("content-type", ""))
    message = f"{url}: HTTP {status} {reason or ''}".rstrip() + (f": {said}" if said else "")
    hint = proxy_auth_hint(proxy) if status == 407 else _hint(status, url)
    return HTTPStatusError(f"{message} ({hint})", url=url, status=status, retry_after=retry_after)


def proxy_auth_hint(proxy: str | None) -> str:
    """What a 407 means and what to do, naming the proxy (its password masked)."""
    where = f"the proxy {redact_url(proxy)}" if proxy else "a proxy on the way"
    return (
        f"proxy authentication required by {where}: put the proxy's user name and password "
        "in its URL, before an @ (in http_proxy, https_proxy or all_proxy), or list this "
        "host in no_proxy"
    )


def check_size(
    status: int, headers: Mapping[str, str], url: str, size: int, *, ranged: bool
) -> None:
    """Raise FileChanged when the answer says the file is not ``size`` bytes long: a 206's
    Content-Range total, or the Content-Length of a 200 to a request for the whole file."""
    said: int | None = None
    if status == 206:
        got = parse_content_range(headers.get("content-range"))
        said = got[2] if got is not None else None
    elif status == 200 and not ranged and not is_encoded(headers):
        length = headers.get("content-length", "").strip()
        said = int(length) if length.isdigit() else None
    if said is not None and said != size:
        raise FileChanged(
            f"{url}: the file changed since it was probed: this answer says it has {said} "
            f"bytes, the probe found {size}",
            url=url,
        )


def _hint(status: int, url: str) -> str:
    if status >= 500:
        return "try later"
    if status in (401, 403) and is_signed(url):
        return (
            "the signed URL may have expired: run again with a freshly signed URL, and the "
            "download resumes from the bytes already on disk"
        )
    return "the file may not exist or needs credentials"


def server_message(body: bytes, content_type: str) -> str | None:
    """The short message an error body carries, one line: S3's and GCS's XML ``<Message>``,
    a JSON ``message`` or ``error``, or the first line of plain text; None for anything else
    (an HTML page, binary, nothing)."""
    text = body[:ERROR_BODY_LIMIT].decode("utf-8", "replace").strip()
    kind = content_type.split(";")[0].strip().lower()
    found: str | None = None
    if "xml" in kind or text.startswith("<?xml"):
        match = _XML_MESSAGE.search(text)
        found = match[1] if match else None
    elif "json" in kind:
        found = _json_message(text)
    elif kind in ("text/plain", "") and text and not text.startswith("<"):
        found = text.splitlines()[0]
    if not found:
        return None
    line = " ".join(found.split())
    if not line.isprintable():
        return None
    return line if len(line) <= _MESSAGE_LIMIT else line[: _MESSAGE_LIMIT - 3] + "..."


def _json_message(text: str) -> str | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        data = data["error"]  # {"error": {"message": ...}}
    if not isinstance(data, dict):
        return None
    return next((v for k in _JSON_MESSAGE_KEYS if isinstance(v := data.get(k), str)), None)


def is_encoded(headers: Mapping[str, str]) -> bool:
    """Whether the body has a Content-Encoding other than identity."""
    return headers.get("content-encoding", "identity") not in ("identity", "")


def check_answer(
    status: int,
    reason: str | None,
    headers: Mapping[str, str],
    url: str,
    byte_range: ByteRange | None,
    size: int | None = None,
) -> None:
    """Raise unless the answer is a usable body for ``byte_range`` (or the whole file) of a
    file of ``size`` bytes (when known: what the probe found).

    A whole-file answer may be encoded although identity was asked: its bytes are kept as
    sent (as curl does).

    Raises:
        HTTPStatusError: on an error status.
        FileChanged: the answer's Content-Range total, or a whole file's length, is not
            ``size``.
        RangeNotHonoured: a range was asked and the whole file, or encoded bytes, came back.
        ProtocolError: the answer is for another range.
    """
    if status >= 400:
        raise status_error(status, reason, headers, url)
    if size is not None:
        check_size(status, headers, url, size, ranged=byte_range is not None)
    if byte_range is None:
        return
    if is_encoded(headers):
        raise RangeNotHonoured(
            f"{url}: asked for {byte_range}, server sent "
            f"{headers.get('content-encoding')!r}-encoded bytes although asked for identity; "
            "they cannot be written at file offsets",
            url=url,
        )
    if status != 206:
        raise RangeNotHonoured(
            f"{url}: asked for {byte_range}, got HTTP {status} with the whole file "
            "(the server ignores Range, or the file changed)",
            url=url,
        )
    got = parse_content_range(headers.get("content-range"))
    if got is None or got[0] != byte_range.start or got[1] > byte_range.end:
        raise ProtocolError(
            f"{url}: asked for {byte_range}, server sent Content-Range "
            f"{headers.get('content-range')!r}",
            url=url,
        )
