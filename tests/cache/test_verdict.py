"""The one cache decision: (state of the file on disk x what is expected of it) -> verdict and
reason, as a table. Each row was checked against the rules of asyncfetch._cache.lookup's
docstring; the fetch-level tests in test_cache.py and tests/hub show the same rules end to end.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from asyncfetch import DestinationError
from asyncfetch._cache import lookup as _lookup
from asyncfetch._cache.lookup import Verdict, judge
from asyncfetch._cache.marker import Marker, read_marker, write_marker
from asyncfetch._expectation import NOTHING, Expectation, HashPrefix, Sha256
from asyncfetch._models import RemoteInfo
from asyncfetch._options import Options
from tests.faultserver import make_payload
from tests.helpers import sha256

DATA = make_payload(50_000, seed=43)
DIGEST = sha256(DATA)
WRONG = ("0" if DIGEST[0] != "0" else "f") * 64
URL = "http://127.0.0.1:9/m.bin"
ETAG = '"v1"'
CHANGED = bytes([DATA[0] ^ 1]) + DATA[1:]  # same size, other bytes


def later(path: Path) -> None:
    """A new mtime, as a restore or a ``cp`` without ``-p`` leaves: the marker no longer
    describes the file."""
    when = time.time() + 10
    os.utime(path, (when, when))


def make_state(path: Path, state: str) -> None:
    """Put the file (and its marker) at ``path`` in ``state``."""
    if state == "missing":
        return
    path.write_bytes(DATA)
    st = path.stat()
    download = Marker(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=DIGEST, expected=DIGEST,
                      url=URL, etag=ETAG, fetched_at=time.time())  # fmt: skip
    baseline = Marker(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=DIGEST, expected=DIGEST)
    marker = {
        "unmarked": None,  # torch.hub's, or copied in
        "downloaded": download,
        "touched": download,
        "changed": download,
        "from another URL": dataclasses.replace(download, url="http://127.0.0.1:9/other.bin"),
        "baseline": baseline,  # what `cache verify` recorded of a file asyncfetch did not fetch
        "baseline, changed": baseline,
    }[state]
    if marker is not None:
        write_marker(path, marker)
    if "changed" in state:
        path.write_bytes(CHANGED)
    if state in ("touched", "changed", "baseline, changed"):
        later(path)


PROBED = RemoteInfo(URL, URL, len(DATA), True, ETAG, None)  # same size and ETag as downloaded

# column -> (expectation, options, what a probe found, the SHA-256 the primary announced,
# torch.hub's any-file rule)
Column = tuple[Expectation, Options, RemoteInfo | None, str | None, bool]
COLUMNS: dict[str, Column] = {
    "sha256": (Sha256(DIGEST), Options(), None, None, False),
    "other sha256": (Sha256(WRONG), Options(), None, None, False),
    "sha256, verify": (Sha256(DIGEST), Options(verify=True), None, None, False),
    "prefix": (HashPrefix(DIGEST[:8]), Options(), None, None, False),
    "other prefix": (HashPrefix(WRONG[:8]), Options(), None, None, False),
    "prefix, download_url_to_file": (
        HashPrefix(DIGEST[:8]),
        Options(trust_unvouched=False),
        None,
        None,
        False,
    ),  # fmt: skip
    "nothing, torch.hub cache": (NOTHING, Options(), None, None, True),
    "nothing, offline": (NOTHING, Options(offline=True), None, None, False),
    "nothing, offline, verify": (NOTHING, Options(offline=True, verify=True), None, None, False),
    "nothing, before a probe": (NOTHING, Options(trust_unvouched=False), None, None, False),
    "nothing, probed": (NOTHING, Options(trust_unvouched=False), PROBED, None, False),
    "nothing, probed, trusting": (NOTHING, Options(trust_unvouched=True), PROBED, None, False),
    "nothing, probed, announced": (NOTHING, Options(), PROBED, DIGEST, False),
    "nothing, probed, other announced": (NOTHING, Options(), PROBED, WRONG, False),
}

# what "good: X" / "bad: X" / "probe: X" mean: verdict.good, or verdict.probe (worth a probe),
# and X is part of verdict.reason
MISSING = "bad: is not in the cache"
HAS = "good: has the SHA-256"
HAS_NOT = "bad: does not have the SHA-256"
PREFIXED = "good: has a SHA-256 starting with"
NOT_PREFIXED = "bad: does not have a SHA-256 starting with"
NEVER = "bad: is never reused here"
AS_IS = "good: is used as it is, as torch.hub"
OFFLINE = "good: is used as it is, offline"
CORRUPT = "bad: is corrupt"
UNVERIFIABLE = "bad: cannot be verified"
UNVOUCHED = "bad: is not vouched for"
WORTH_A_PROBE = "probe: a probe tells"
SERVERS = "good: is the server's file"
ELSEWHERE = "bad: was downloaded from another URL"
NOT_ANNOUNCED = "bad: the server announces"

TABLE: dict[str, tuple[str, ...]] = {
    # columns:          sha256 / other / verify, prefix / other / download_url_to_file,
    #                   hub cache, offline / offline verify, before a probe,
    #                   probed / trusting / announced / other announced
    "missing": (MISSING, MISSING, MISSING, MISSING, MISSING, MISSING,
                MISSING, MISSING, MISSING, MISSING,
                MISSING, MISSING, MISSING, MISSING),
    "unmarked": (HAS, HAS_NOT, HAS, PREFIXED, NOT_PREFIXED, NEVER,
                 AS_IS, OFFLINE, UNVERIFIABLE, UNVOUCHED,
                 UNVOUCHED, SERVERS, UNVOUCHED, UNVOUCHED),
    "downloaded": (HAS, HAS_NOT, HAS, PREFIXED, NOT_PREFIXED, NEVER,
                   AS_IS, OFFLINE, OFFLINE, WORTH_A_PROBE,
                   SERVERS, SERVERS, SERVERS, NOT_ANNOUNCED),
    "touched": (HAS, HAS_NOT, HAS, PREFIXED, NOT_PREFIXED, NEVER,
                AS_IS, OFFLINE, OFFLINE, WORTH_A_PROBE,
                SERVERS, SERVERS, SERVERS, NOT_ANNOUNCED),
    "changed": (HAS_NOT, HAS_NOT, HAS_NOT, NOT_PREFIXED, NOT_PREFIXED, NEVER,
                AS_IS, CORRUPT, CORRUPT, WORTH_A_PROBE,
                CORRUPT, CORRUPT, CORRUPT, CORRUPT),
    "from another URL": (HAS, HAS_NOT, HAS, PREFIXED, NOT_PREFIXED, NEVER,
                         AS_IS, OFFLINE, UNVERIFIABLE, UNVOUCHED,
                         ELSEWHERE, ELSEWHERE, ELSEWHERE, ELSEWHERE),
    "baseline": (HAS, HAS_NOT, HAS, PREFIXED, NOT_PREFIXED, NEVER,
                 AS_IS, OFFLINE, UNVERIFIABLE, UNVOUCHED,
                 UNVOUCHED, SERVERS, UNVOUCHED, UNVOUCHED),
    "baseline, changed": (HAS_NOT, HAS_NOT, HAS_NOT, NOT_PREFIXED, NOT_PREFIXED, NEVER,
                          AS_IS, CORRUPT, UNVERIFIABLE, UNVOUCHED,
                          UNVOUCHED, CORRUPT, UNVOUCHED, UNVOUCHED),
}  # fmt: skip

CASES = [
    pytest.param(state, column, outcome, id=f"{state} x {column}")
    for state, outcomes in TABLE.items()
    for column, outcome in zip(COLUMNS, outcomes, strict=True)
]


@pytest.mark.parametrize(("state", "column", "outcome"), CASES)
def test_verdict(tmp_path: Path, state: str, column: str, outcome: str) -> None:
    path = tmp_path / "m.bin"
    make_state(path, state)
    expected, options, remote, announced, any_file = COLUMNS[column]

    verdict = judge(
        path, expected, urls=(URL,), options=options, remote=remote, announced=announced,
        any_file=any_file,
    )  # fmt: skip

    kind, reason = outcome.split(": ", 1)
    assert (verdict.good, verdict.probe) == (kind == "good", kind == "probe"), verdict
    assert reason in verdict.reason
    assert (verdict.hit is not None) is verdict.good
    assert verdict.found is (state != "missing")


def test_a_good_verdict_records_its_use_and_a_bad_digest_is_not_hashed_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.bin"
    make_state(path, "changed")
    hashed: list[Path] = []
    real = _lookup.hash_file
    monkeypatch.setattr(_lookup, "hash_file", lambda p: hashed.append(p) or real(p))

    first = judge(path, Sha256(DIGEST), urls=(URL,), options=Options())
    marker = read_marker(path)
    assert marker is not None
    assert marker.sha256 == sha256(CHANGED)  # recorded: the next look needs no re-hash
    again = judge(path, Sha256(sha256(CHANGED)), urls=(URL,), options=Options())

    assert not first.good
    assert hashed == [path]  # once: the second look took the digest from the marker
    assert again.hit is not None
    assert again.hit.sha256 == sha256(CHANGED)
    used = read_marker(path)
    assert used is not None
    assert used.verified  # a caller's SHA-256 matched it
    assert used.last_used is not None


@pytest.mark.parametrize("waited", [False, True])
def test_under_the_lock_a_prefix_is_judged_again_only_after_waiting(
    tmp_path: Path, waited: bool
) -> None:
    path = tmp_path / "m.bin"
    make_state(path, "downloaded")  # as another download of the same file just left it
    options = Options(trust_unvouched=False)  # download_url_to_file

    verdict: Verdict = judge(
        path, HashPrefix(DIGEST[:8]), urls=(URL,), options=options, waited=waited
    )

    assert verdict.good is waited


def test_a_directory_is_an_error_not_a_verdict(tmp_path: Path) -> None:
    (tmp_path / "m.bin").mkdir()
    with pytest.raises(DestinationError, match="is a directory"):
        judge(tmp_path / "m.bin", NOTHING, urls=(URL,), options=Options(offline=True))
