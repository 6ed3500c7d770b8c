"""Signed URLs reached through a redirect (a hub's ``resolve/...`` → a CDN URL signed for an
hour): when one starts refusing (401, 403) mid-download, the source is asked again for a
fresh one, as often as the download needs, and given up only after MAX_IN_A_ROW such
re-resolves in a row without a byte in between."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._errors import HTTPStatusError, ProtocolError, TransportError
from .._transport.client import Transport
from .._userinfo import redact

MAX_IN_A_ROW = 3
REFUSALS = frozenset({401, 403})


def refused(exc: TransportError) -> bool:
    """Whether ``exc`` is the refusal an expired signed URL answers with."""
    return isinstance(exc, HTTPStatusError) and exc.status in REFUSALS


@dataclass
class Resolves:
    """How many times in a row each source was resolved again without progress."""

    _counts: dict[str, tuple[int, int]] = field(default_factory=dict)

    def allow(self, source: str, received: int) -> bool:
        """Whether ``source``, having given ``received`` bytes so far, may be resolved again
        (and count it): bytes since the last time start the count afresh."""
        count, mark = self._counts.get(source, (0, -1))
        if received != mark:
            count = 0
        if count >= MAX_IN_A_ROW:
            return False
        self._counts[source] = (count + 1, received)
        return True


async def resolve_again(
    transport: Transport, source: str, size: int | None, validator: str | None
) -> str:
    """Probe ``source`` again and return where it leads now, checked to be the same file.

    Raises:
        ProtocolError: it leads to a file of another size or validator (not retryable).
        TransportError: the probe failed.
    """
    info = await transport.probe(source)
    changed = (size is not None and info.size != size) or (
        validator is not None and info.validator is not None and info.validator != validator
    )
    if changed:
        raise ProtocolError(
            f"{redact(source)}: resolved again, it now serves another file ({info.size} bytes, "
            f"validator {info.validator!r}; was {size}, {validator!r}); run again to start over",
            url=source,
            retryable=False,
        )
    return info.final_url
