"""Digests a server announces for the whole file, read from an answer's headers. Pure, no I/O.

Only values that are a whole file's SHA-256 count:

- ``Repr-Digest: sha-256=:BASE64:`` (RFC 9530; the digest of the selected representation,
  the same on a 206 as on a 200) and the legacy ``Digest: SHA-256=BASE64`` (RFC 3230);
- ``X-Linked-Etag`` when it is 64 hex digits (the Hugging Face hub sends the file's SHA-256
  there on its answer before the redirect to the CDN);
- ``x-amz-checksum-sha256`` unless it is a composite (a multipart upload's value ends in
  ``-N`` and is a checksum of the parts' checksums). S3 sends it only when asked with
  ``x-amz-checksum-mode: ENABLED``.

Anything else (``Content-Digest``, which is of the bytes of this answer only, other
algorithms, ETags) is ignored.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping

from .._expectation import is_sha256
from .._userinfo import is_signed

#: Asks S3 for ``x-amz-checksum-sha256`` (sent on the probe of unsigned requests only).
CHECKSUM_MODE = {"x-amz-checksum-mode": "ENABLED"}


def announced_sha256(headers: Mapping[str, str]) -> str | None:
    """The whole file's SHA-256 (lower-case hex) that ``headers`` announce, or None.

    ``headers`` answer lower-case names (aiohttp's mapping or the fast path's dict).
    """
    for name, parse in (
        ("repr-digest", _from_repr_digest),
        ("digest", _from_legacy_digest),
        ("x-linked-etag", _from_linked_etag),
        ("x-amz-checksum-sha256", _from_amz),
    ):
        value = headers.get(name)
        digest = parse(value) if value else None
        if digest is not None:
            return digest
    return None


def first_announced(answers: Iterable[Mapping[str, str]]) -> str | None:
    """The digest announced by the first of ``answers`` (a redirect chain, in order) that
    announces one."""
    for headers in answers:
        digest = announced_sha256(headers)
        if digest is not None:
            return digest
    return None


def may_ask_checksum(url: str, headers: Mapping[str, str]) -> bool:
    """Whether ``x-amz-checksum-mode`` may be added to a request: not to a signed one (a
    presigned URL, or the caller's Authorization), where S3 refuses headers not signed."""
    if any(name.lower() == "authorization" for name in headers):
        return False
    return not is_signed(url)


def _from_repr_digest(value: str) -> str | None:
    """``sha-256=:BASE64:`` among the members of a Repr-Digest dictionary."""
    for member in value.split(","):
        name, _, item = member.strip().partition("=")
        item = item.split(";", 1)[0].strip()
        if name.strip().lower() == "sha-256" and len(item) > 2 and item[0] == item[-1] == ":":
            return _from_base64(item[1:-1])
    return None


def _from_legacy_digest(value: str) -> str | None:
    """``SHA-256=BASE64`` among the members of a legacy Digest header."""
    for member in value.split(","):
        name, _, item = member.strip().partition("=")
        if name.strip().lower() == "sha-256":
            return _from_base64(item.strip())
    return None


def _from_linked_etag(value: str) -> str | None:
    tag = value.strip().removeprefix("W/").strip('"')
    return tag.lower() if is_sha256(tag) else None


def _from_amz(value: str) -> str | None:
    value = value.strip()
    if re.search(r"-\d+$", value):
        return None  # a composite: a checksum of the parts' checksums
    return _from_base64(value)


def _from_base64(text: str) -> str | None:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None
