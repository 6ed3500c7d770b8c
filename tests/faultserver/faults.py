"""The fault query parameters: how each is parsed, and the record of each request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

STALL_LIMIT_S = 60.0  # a stalled response gives up after this long


def flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a flag: {value!r}")


def count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"must be >= 0: {value!r}")
    return number


def seconds(value: str) -> float:
    number = float(value)
    if not 0 <= number <= STALL_LIMIT_S:
        raise ValueError(f"must be within 0..{STALL_LIMIT_S}: {value!r}")
    return number


#: Fault query parameters and how each value is parsed.
FAULT_PARAMS: dict[str, Callable[[str], Any]] = {
    "status": int,
    "retry_after": str,
    "reset_after": count,
    "truncate_after": count,
    "flip_byte": count,
    "ignore_range": flag,
    "wrong_range": flag,
    "no_head": flag,
    "head_lies": flag,
    "no_ranges": flag,
    "no_length": flag,
    "redirect": count,
    "redirect_loop": flag,
    "redirect_to": str,
    "stall_after": count,
    "gzip": flag,
    "auth": str,
    "rate": count,
    "delay": seconds,
    "close": flag,
    "burst": count,
    "times": count,
    "digest": str,
    "digest_of": str,
    "changed": int,
    "force_gzip": flag,
    "refuse_header": str,
    "X-Amz-Signature": str,
    "expires_after": count,
    "sign": flag,
}
#: Fault parameters spelt otherwise than their Faults field.
FIELD_NAMES = {"X-Amz-Signature": "signature"}


@dataclass(frozen=True)
class Faults:
    status: int | None = None
    retry_after: str | None = None
    reset_after: int | None = None
    truncate_after: int | None = None
    flip_byte: tuple[int, ...] = ()
    ignore_range: bool = False
    wrong_range: bool = False
    no_head: bool = False
    head_lies: bool = False
    no_ranges: bool = False
    no_length: bool = False
    redirect: int = 0
    redirect_loop: bool = False
    redirect_to: str | None = None
    stall_after: int | None = None
    gzip: bool = False
    auth: str | None = None
    rate: int | None = None
    delay: float = 0.0
    close: bool = False
    burst: int = 0
    times: int | None = None
    digest: tuple[str, ...] = ()
    digest_of: str | None = None
    changed: int | None = None
    force_gzip: bool = False
    refuse_header: str | None = None
    signature: str | None = None
    expires_after: int | None = None
    sign: bool = False

    @classmethod
    def parse(cls, request: web.Request) -> Faults:
        """Parse the query; raise ValueError naming an unknown or malformed parameter."""
        values: dict[str, Any] = {}
        for key in set(request.query):
            if key not in FAULT_PARAMS:
                raise ValueError(f"unknown fault parameter {key!r}")
            raw = request.query.getall(key)
            try:
                parsed = [FAULT_PARAMS[key](item) for item in raw]
            except ValueError as exc:
                raise ValueError(f"bad value for {key}: {exc}") from None
            name = FIELD_NAMES.get(key, key)
            values[name] = tuple(parsed) if key in ("flip_byte", "digest") else parsed[-1]
        return cls(**values)


@dataclass
class RequestRecord:
    """One request as the server saw it; updated in place while the response is sent.

    `range` is the client's single `Range` resolved against the file size as
    (start, end_inclusive), or None (absent, malformed, multi-range or unsatisfiable).
    `bytes_sent` counts body bytes written for a file response (gzip: compressed bytes; error
    and redirect answers count 0). `timestamp` and `finished` are `time.monotonic()` values.
    `outcome` is "pending", "ok", "reset", "truncated", "stalled", "client_gone" or "stopped";
    `faults` names the faults that fired for this request.
    """

    method: str
    path: str
    query: dict[str, str]
    range: tuple[int, int] | None
    headers: dict[str, str]
    client_port: int
    connection: int
    timestamp: float
    status: int | None = None
    bytes_sent: int = 0
    outcome: str = "pending"
    faults: list[str] = field(default_factory=list)
    finished: float | None = None

    @property
    def name(self) -> str:
        """The file name for a /files/NAME request, else ''."""
        return self.path[len("/files/") :] if self.path.startswith("/files/") else ""
