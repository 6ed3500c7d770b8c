"""How ``asyncfetch serve`` answers a failure: the service's own errors, the HTTP status of
each :class:`~asyncfetch.FetchError`, and the JSON shape of every error answer
(``{"error": message on one line, "type": kind}``), aiohttp's own included."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from .._errors import (
    AddressBlocked,
    DestinationError,
    FetchError,
    IntegrityError,
    InvalidRequest,
    RetriesExhausted,
    TransportError,
)
from .._transport.tls import HINT as CLIENT_TRUST_HINT
from .limits import QueueFull, TooSlow

SERVICE_TRUST_HINT = (
    "start asyncfetch serve with REQUESTS_CA_BUNDLE or SSL_CERT_FILE naming a PEM bundle that "
    "holds the private CA (it replaces the system store)"
)


class NameInUse(InvalidRequest):
    """The name asked for is being downloaded from another URL now."""


class NameTaken(InvalidRequest):
    """The name asked for holds a different file, and the request did not ask to replace it."""


class BodyTooSlow(InvalidRequest):
    """The request's body did not arrive in time."""


#: the status answering each kind of failure, the first that matches (subclasses before the
#: classes they refine: BodyTooSlow, NameInUse and NameTaken are InvalidRequests)
_STATUSES: tuple[tuple[type[FetchError] | tuple[type[FetchError], ...], int], ...] = (
    ((NameInUse, NameTaken), 409),
    (BodyTooSlow, 408),
    (QueueFull, 429),
    (AddressBlocked, 403),
    (TooSlow, 504),
    (InvalidRequest, 400),
    (IntegrityError, 422),
    (DestinationError, 507),
    ((TransportError, RetriesExhausted), 502),
)


def status_for(exc: FetchError) -> int:
    """The HTTP status that answers a failed download (500 for a kind not in _STATUSES)."""
    return next((status for kinds, status in _STATUSES if isinstance(exc, kinds)), 500)


def message_of(exc: FetchError) -> str:
    """``exc``'s message as the service tells it: a certificate's hint names what the service
    follows (the environment it was started in), not options only a command line has."""
    return str(exc).replace(CLIENT_TRUST_HINT, SERVICE_TRUST_HINT)


def error_response(
    status: int, message: str, kind: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """The service's JSON error answer: ``{"error": message on one line, "type": kind}``."""
    body = {"error": " ".join(message.split()), "type": kind}
    return web.json_response(body, status=status, headers=headers)


def failure(exc: FetchError, status_for: Any) -> web.Response:
    """The error answer to ``exc`` (with ``Retry-After`` when the queue is full)."""
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, QueueFull) else None
    return error_response(status_for(exc), message_of(exc), type(exc).__name__, headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer aiohttp's own errors (no such route, wrong method) in the service's JSON shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        answer = error_response(exc.status, f"{request.method} {request.path}: {exc.reason}",
                                 type(exc).__name__.removeprefix("HTTP"))  # fmt: skip
        if "Allow" in exc.headers:
            answer.headers["Allow"] = exc.headers["Allow"]
        return answer
