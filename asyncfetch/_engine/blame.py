"""Blame: when several sources served a file whose SHA-256 is wrong, find which one lied.

Each contributor's share is re-fetched from the other sources, smallest share first, until
the file hashes right; that contributor is dropped. Only its ranges are fetched again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .._errors import FetchError, IntegrityError
from .._models import ByteRange
from .._storage.extents import Extents
from .._userinfo import redact
from .mirrors import MirrorBoard

log = logging.getLogger("asyncfetch")

Refetch = Callable[[list[ByteRange]], Awaitable[None]]
Rehash = Callable[[], Awaitable[str]]
Notify = Callable[[str], None]


@dataclass
class Blame:
    """Who served which bytes of one download, and how to re-fetch and re-hash them."""

    served: dict[str, Extents]
    board: MirrorBoard
    expected: str

    def contributors(self) -> list[str]:
        """Sources that served bytes in this run, the smallest share first."""
        urls = [url for url, extents in self.served.items() if extents.total()]
        return sorted(urls, key=lambda url: self.served[url].total())

    async def repair(self, digest: str, refetch: Refetch, rehash: Rehash, notify: Notify) -> str:
        """Re-fetch each contributor's share from the others until the digest matches.

        Returns:
            The digest after the last attempt (the expected one when a culprit was found).
        """
        for suspect in self.contributors():
            if not self.board.others_usable(suspect, float("inf")):
                continue
            runs = [ByteRange(s, e) for s, e in self.served[suspect].runs()]
            log.warning(
                "SHA-256 mismatch: re-fetching what %s served from the others", redact(suspect)
            )
            self.board.drop(suspect, "suspected of serving bad bytes")
            try:
                await refetch(runs)
            except FetchError as exc:
                log.warning("could not re-fetch %s's share: %s", redact(suspect), exc)
            else:
                digest = await rehash()
            if digest == self.expected:
                self._convict(suspect, notify)
                return digest
            self.board.get(suspect).dropped = None
        return digest

    def _convict(self, suspect: str, notify: Notify) -> None:
        reason = "served bytes that do not match the expected SHA-256"
        self.board.drop(suspect, reason)
        notify(f"dropped {suspect}: {reason}")
        log.warning("dropped %s: it %s; its ranges came from the others", redact(suspect), reason)

    def explain(self, error: IntegrityError) -> IntegrityError:
        """``error`` with the sources that served bytes named, when there were several."""
        contributors = self.contributors()
        if len(contributors) < 2:
            return error
        return IntegrityError(
            f"{error} Sources that served bytes: {', '.join(contributors)}; re-fetching each "
            "one's share from the others did not give the expected file.",
            url=error.url,
            expected=error.expected,
            actual=error.actual,
        )
