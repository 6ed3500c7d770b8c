"""Which headers announce a whole file's SHA-256, and which do not."""

from __future__ import annotations

import base64
import hashlib

import pytest

from asyncfetch._transport.digests import announced_sha256, may_ask_checksum

DIGEST = hashlib.sha256(b"model").digest()
HEX = DIGEST.hex()
B64 = base64.b64encode(DIGEST).decode()


@pytest.mark.parametrize(
    "headers",
    [
        {"repr-digest": f"sha-256=:{B64}:"},
        {"repr-digest": f"sha-512=:{base64.b64encode(bytes(64)).decode()}:, sha-256=:{B64}:"},
        {"digest": f"SHA-256={B64}"},
        {"digest": f"md5=AAAAAAAAAAAAAAAAAAAAAA==,sha-256={B64}"},
        {"x-linked-etag": f'"{HEX}"'},
        {"x-linked-etag": HEX.upper()},
        {"x-amz-checksum-sha256": B64},
    ],
    ids=["repr", "repr-among-others", "legacy", "legacy-lower", "linked", "linked-bare", "amz"],
)
def test_whole_file_digests_are_read(headers: dict[str, str]) -> None:
    assert announced_sha256(headers) == HEX


@pytest.mark.parametrize(
    "headers",
    [
        {"content-digest": f"sha-256=:{B64}:"},  # of this answer's bytes only
        {"repr-digest": f"sha-512=:{B64}:"},
        {"repr-digest": f"sha-256={B64}"},  # not a byte sequence
        {"digest": f"SHA-256={B64[:-4]}"},  # not 32 bytes
        {"x-linked-etag": '"5d41402abc4b2a76b9719d911017c592"'},  # a git blob's, not a SHA-256
        {"x-amz-checksum-sha256": f"{B64}-3"},  # a multipart checksum of checksums
        {"etag": f'"{HEX}"'},
    ],
    ids=["content-digest", "sha-512", "repr-no-colons", "short", "linked-md5", "composite", "etag"],
)
def test_anything_else_is_ignored(headers: dict[str, str]) -> None:
    assert announced_sha256(headers) is None


def test_checksum_mode_is_not_added_to_a_signed_request() -> None:
    assert may_ask_checksum("https://b.s3.amazonaws.com/m.bin", {})
    assert not may_ask_checksum("https://b.s3.amazonaws.com/m.bin?X-Amz-Signature=ab", {})
    assert not may_ask_checksum("https://b.s3.amazonaws.com/m.bin", {"Authorization": "AWS4"})
    # any of the one list of signing parameters marks it signed (an Azure SAS, a token)
    assert not may_ask_checksum("https://a.blob.core.windows.net/c/m.bin?sv=1&sig=ab", {})
    assert not may_ask_checksum("https://h/m.bin?Expires=1&Key-Pair-Id=K&Signature=s", {})
