"""What the caller expects of a file's bytes: one value, checked in one place.

An :data:`Expectation` is a full SHA-256 (:class:`Sha256`), torch.hub's SHA-256 prefix
(:class:`HashPrefix`), or nothing (:data:`NOTHING`). The part file's ``finalize`` checks a
finished download against it before the one rename to the target, and the cache's verdict
checks a file already on disk against it.

Adding a kind (say, a digest the primary server announced): a frozen dataclass with the same
members (``digest``, ``admits``, ``mismatch``), added to the ``Expectation``
union. The part file's finish needs no change; the cache's ``judge`` treats any kind with a
``digest`` as a full SHA-256 (and records it as a caller's: change that there if it should
not vouch as one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, TypeGuard

from ._errors import HashPrefixMismatch, IntegrityError, InvalidRequest

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_DISCARDED = "the download was discarded"


@dataclass(frozen=True)
class Sha256:
    """The file's full SHA-256 (lower-case hex), as the caller gave it or the server
    announced it."""

    hex: str
    announced: bool = False  # the server's (a digest header), not the caller's

    @property
    def digest(self) -> str | None:
        """The full SHA-256 the file must have."""
        return self.hex

    def admits(self, digest: str | None) -> bool:
        """Whether a file whose SHA-256 is ``digest`` is the one expected."""
        return digest == self.hex

    def mismatch(self, url: str, digest: str | None) -> IntegrityError:
        """The error for a download whose SHA-256 is ``digest`` instead (it was discarded)."""
        sent = "the server or a mirror sent different bytes"
        why = sent if self.announced else f"check the SHA-256 given; if it is right, {sent}"
        return IntegrityError(
            f"{url}: SHA-256 mismatch: expected {self.hex}, got {digest}; {_DISCARDED} ({why})",
            url=url,
            expected=self.hex,
            actual=digest or "",
        )


@dataclass(frozen=True)
class HashPrefix:
    """The first hex digits of the file's SHA-256, as torch.hub's ``hash_prefix`` and
    ``check_hash`` (``NAME-<hex>.EXT``) give them."""

    prefix: str

    @property
    def digest(self) -> str | None:
        """None: a prefix is not a full SHA-256."""
        return None

    def admits(self, digest: str | None) -> bool:
        """Whether a file whose SHA-256 is ``digest`` is the one expected."""
        return digest is not None and digest.startswith(self.prefix)

    def mismatch(self, url: str, digest: str | None) -> IntegrityError:
        """torch.hub's error (a RuntimeError too) for a download whose SHA-256 is ``digest``."""
        return HashPrefixMismatch(
            f"{url}: invalid hash value: SHA-256 {digest} does not start with {self.prefix}; "
            f"{_DISCARDED} (the server sent other bytes)",
            url=url,
            expected=self.prefix,
            actual=digest or "",
        )


@dataclass(frozen=True)
class Nothing:
    """No expectation: any bytes the sources agree on will do."""

    @property
    def digest(self) -> str | None:
        """None: nothing is expected."""
        return None

    def admits(self, digest: str | None) -> bool:
        """Always: nothing is expected."""
        return True

    def mismatch(self, url: str, digest: str | None) -> IntegrityError:
        """Never raised (every digest is admitted); here for a uniform interface."""
        raise AssertionError("nothing expected, so nothing can mismatch")


NOTHING: Final = Nothing()

Expectation = Sha256 | HashPrefix | Nothing


def is_sha256(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a str of exactly 64 hex digits (either case): a SHA-256 as hex."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def check_sha256(sha256: object, url: str | None = None) -> str | None:
    """``sha256`` in lower case if it is a str of 64 hex digits (None stays None), else
    InvalidRequest."""
    if sha256 is None:
        return None
    if not is_sha256(sha256):
        raise InvalidRequest(
            f"sha256 must be a str of 64 hex digits, got {sha256!r}", url=url or None
        )
    return sha256.lower()


def expect_sha256(sha256: object, url: str | None = None) -> Sha256 | Nothing:
    """The expectation a caller's ``sha256`` argument sets: :class:`Sha256`, or NOTHING for
    None; InvalidRequest for anything that is not 64 hex digits."""
    checked = check_sha256(sha256, url)
    return NOTHING if checked is None else Sha256(checked)
