"""fetch(): ranged downloads against the fault-injecting server, over every receive path
(http on the fast path and on aiohttp, https; see tests.helpers.RECEIVE_PATHS)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import time
from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import (
    DestinationError,
    FetchError,
    FetchTimeout,
    HTTPStatusError,
    IntegrityError,
    ProgressEvent,
    RetriesExhausted,
    TooManyRedirects,
)
from tests.faultserver import FaultServer, make_payload
from tests.helpers import (
    SPECIAL_KINDS,
    basic,
    http_only,
    leftovers,
    make_special,
    no_wait,
    over_every_receive_path,  # noqa: F401 (the scheme fixture)
    sha256,
    stored_marker,
    with_credentials,
)

KiB = 1024
CHUNK = 256 * KiB
AUTH = "user:open-sesame"  # what the server asks for


async def test_parallel_ranges_give_the_exact_file(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("model.bin", payload)
    url = server.url("model.bin", rate=4 << 20)  # slow enough for the requests to overlap
    dest = tmp_path / "model.bin"

    result = await asyncfetch.fetch(url, dest, chunk_size=CHUNK, connections=4)

    assert dest.read_bytes() == payload
    assert result.sha256 == sha256(payload)
    assert result.size == len(payload)
    assert leftovers(tmp_path) == ["model.bin"]
    ranges = sorted(r.range for r in server.gets("model.bin") if r.range != (0, 0))
    assert len(ranges) == -(-len(payload) // CHUNK)  # one request per chunk, none twice
    assert server.max_concurrent > 1


async def test_download_ends_when_its_last_range_does_not_a_poll_later(
    server: FaultServer, payload: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3 chunks, 2 connections: one worker goes idle while the last chunk is still in flight,
    # and waits to steal; when that chunk lands, it must notice at once
    monkeypatch.setattr("asyncfetch._engine.download.STEAL_POLL", 30.0)
    server.add_file("tail.bin", payload)
    url = server.url("tail.bin", rate=2 << 20)
    started = time.monotonic()

    await asyncfetch.fetch(url, tmp_path / "tail.bin", chunk_size=400 * KiB, connections=2)

    assert time.monotonic() - started < 10.0  # not the 30 s poll interval
    assert (tmp_path / "tail.bin").read_bytes() == payload


async def test_expected_digest_is_checked(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", payload)
    result = await asyncfetch.fetch(url, tmp_path / "m.bin", sha256=sha256(payload).upper())
    assert result.sha256 == sha256(payload)


async def test_hash_off_returns_no_digest(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", payload)
    result = await asyncfetch.fetch(url, tmp_path / "m.bin", hash=False)
    assert result.sha256 is None
    assert (tmp_path / "m.bin").read_bytes() == payload


async def test_reset_resumes_from_the_byte_reached(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", truncate_after=100_000, times=1)
    policy, sleeps = no_wait()

    result = await asyncfetch.fetch(
        url, tmp_path / "m.bin", chunk_size=CHUNK, connections=1, retry=policy
    )

    assert (tmp_path / "m.bin").read_bytes() == payload
    gets = [r for r in server.gets("m.bin") if r.range != (0, 0)]
    assert gets[0].range == (0, CHUNK - 1)
    assert gets[1].range == (100_000, CHUNK - 1)  # continued, did not start over
    assert result.retries == 1
    assert len(sleeps.waits) == 1


async def test_connection_reset_mid_body_loses_nothing(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", reset_after=150_000, times=2)
    policy, _ = no_wait()

    await asyncfetch.fetch(url, tmp_path / "m.bin", chunk_size=CHUNK, connections=2, retry=policy)

    assert (tmp_path / "m.bin").read_bytes() == payload
    resets = [r for r in server.gets("m.bin") if r.outcome == "reset"]
    assert len(resets) == 2
    served = server.bytes_served("m.bin")
    assert served < len(payload) + 2 * 150_000 + 2  # never refetched a whole range


async def test_503_then_ok(server: FaultServer, payload: bytes, tmp_path: Path) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", status=503, times=2)
    policy, sleeps = no_wait()

    result = await asyncfetch.fetch(url, tmp_path / "m.bin", retry=policy)

    assert (tmp_path / "m.bin").read_bytes() == payload
    assert [r.status for r in server.requests[:2]] == [503, 503]
    assert len(sleeps.waits) == 2
    assert sleeps.waits[1] >= sleeps.waits[0] * 0.5  # backoff, with jitter
    assert result.sha256 == sha256(payload)


async def test_429_retry_after_seconds_is_honoured(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", status=429, retry_after="7", times=1)
    policy, sleeps = no_wait()

    await asyncfetch.fetch(url, tmp_path / "m.bin", retry=policy)

    assert sleeps.waits == [7.0]


async def test_retry_after_http_date_is_honoured(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    url = server.url("m.bin", status=503, retry_after=when, times=1)
    policy, sleeps = no_wait()

    await asyncfetch.fetch(url, tmp_path / "m.bin", retry=policy)

    assert len(sleeps.waits) == 1
    assert 15 <= sleeps.waits[0] <= 21


async def test_retries_run_out_with_a_clear_error(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", reset_after=0)
    policy, sleeps = no_wait(attempts=3)
    dest = tmp_path / "m.bin"

    with pytest.raises(RetriesExhausted) as caught:
        await asyncfetch.fetch(url, dest, chunk_size=CHUNK, connections=1, retry=policy)

    error = caught.value
    assert error.attempts == 3
    assert error.byte_range == (0, CHUNK)
    assert error.url == url
    assert url in str(error)
    assert "3 attempts" in str(error)
    assert "bytes 0-" in str(error)
    assert not dest.exists()


async def test_404_is_fatal_and_not_retried(server: FaultServer, tmp_path: Path) -> None:
    policy, sleeps = no_wait()
    url = server.url("missing.bin")

    with pytest.raises(HTTPStatusError) as caught:
        await asyncfetch.fetch(url, tmp_path / "m.bin", retry=policy)

    assert caught.value.status == 404
    assert url in str(caught.value)
    assert sleeps.waits == []
    assert leftovers(tmp_path) == []


async def test_403_is_fatal(server: FaultServer, payload: bytes, tmp_path: Path) -> None:
    server.add_file("m.bin", payload)
    policy, sleeps = no_wait()
    with pytest.raises(HTTPStatusError) as caught:
        await asyncfetch.fetch(server.url("m.bin", status=403), tmp_path / "m.bin", retry=policy)
    assert caught.value.status == 403
    assert sleeps.waits == []
    assert leftovers(tmp_path) == []


async def test_flipped_byte_fails_the_digest_and_leaves_nothing(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    dest = tmp_path / "m.bin"

    with pytest.raises(IntegrityError) as caught:
        await asyncfetch.fetch(server.url("m.bin", flip_byte=500_000), dest, sha256=sha256(payload))

    assert "SHA-256 mismatch" in str(caught.value)
    assert leftovers(tmp_path) == []  # the bad bytes are not kept for a resume either


async def test_200_to_a_range_is_never_written_at_an_offset(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", ignore_range=True)

    result = await asyncfetch.fetch(url, tmp_path / "m.bin", chunk_size=CHUNK, connections=4)

    assert (tmp_path / "m.bin").read_bytes() == payload
    assert result.sha256 == sha256(payload)
    assert any(r.range is None and r.status == 200 for r in server.gets("m.bin"))


async def test_head_refused_probes_with_a_one_byte_get(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", no_head=True)

    await asyncfetch.fetch(url, tmp_path / "m.bin", chunk_size=CHUNK)

    assert (tmp_path / "m.bin").read_bytes() == payload
    assert server.gets("m.bin")[0].range == (0, 0)
    assert len(server.gets("m.bin")) > 2  # then ranged requests
    assert [r.method for r in server.requests].count("HEAD") == 1  # asked once, not again


async def test_lying_head_is_corrected_by_the_get_probe(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", head_lies=True)
    result = await asyncfetch.fetch(url, tmp_path / "m.bin", sha256=sha256(payload))
    assert result.size == len(payload)


async def test_redirect_chain_is_followed(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    result = await asyncfetch.fetch(server.url("m.bin", redirect=3), tmp_path / "m.bin")
    assert result.sha256 == sha256(payload)


async def test_redirect_loop_is_an_error(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    policy, _ = no_wait()
    with pytest.raises(TooManyRedirects, match="redirect"):
        await asyncfetch.fetch(
            server.url("m.bin", redirect_loop=True), tmp_path / "m.bin", retry=policy
        )
    assert leftovers(tmp_path) == []


async def test_stalled_body_times_out_and_resumes(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", stall_after=70_000, times=1)
    policy, _ = no_wait()

    result = await asyncfetch.fetch(
        url, tmp_path / "m.bin", timeout=0.5, retry=policy, connections=1, chunk_size=CHUNK
    )

    assert result.sha256 == sha256(payload)
    ranges = [r.range for r in server.gets("m.bin")]
    assert (70_000, CHUNK - 1) in ranges


async def test_stall_without_retries_is_a_timeout(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", stall_after=10)
    with pytest.raises(RetriesExhausted) as caught:
        await asyncfetch.fetch(url, tmp_path / "m.bin", timeout=0.3, retry=0, connections=1)
    assert isinstance(caught.value.__cause__, FetchTimeout)
    assert "timed out" in str(caught.value)


async def test_slow_but_live_download_is_not_timed_out(server: FaultServer, tmp_path: Path) -> None:
    data = make_payload(300_000, seed=3)
    server.add_file("slow.bin", data)
    url = server.url("slow.bin", rate=300_000)  # ~1 s in all, never 0.4 s silent
    result = await asyncfetch.fetch(url, tmp_path / "slow.bin", timeout=0.4, retry=0)
    assert result.sha256 == sha256(data)


async def test_identity_encoding_is_asked_for(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    result = await asyncfetch.fetch(server.url("m.bin", gzip=True), tmp_path / "m.bin")
    assert result.sha256 == sha256(payload)
    assert all(r.headers.get("Accept-Encoding") == "identity" for r in server.requests)


async def test_wrong_range_is_retried_not_written(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    policy, _ = no_wait()
    url = server.url("m.bin", wrong_range=True, times=1)
    result = await asyncfetch.fetch(url, tmp_path / "m.bin", retry=policy, chunk_size=CHUNK)
    assert result.sha256 == sha256(payload)


@pytest.mark.parametrize("fault", ["no_ranges", "no_length"])
async def test_server_without_ranges_gets_one_stream(
    server: FaultServer, payload: bytes, tmp_path: Path, fault: str
) -> None:
    server.add_file("m.bin", payload)
    result = await asyncfetch.fetch(server.url("m.bin", **{fault: True}), tmp_path / "m.bin")
    assert (tmp_path / "m.bin").read_bytes() == payload
    assert result.sha256 == sha256(payload)
    assert sum(1 for r in server.gets("m.bin") if r.range is None) == 1


async def test_single_stream_truncation_starts_over(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    policy, _ = no_wait()
    url = server.url("m.bin", no_ranges=True, truncate_after=300_000, times=1)
    result = await asyncfetch.fetch(url, tmp_path / "m.bin", retry=policy)
    assert result.sha256 == sha256(payload)
    assert (tmp_path / "m.bin").read_bytes() == payload


async def test_progress_events_in_order(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", payload)
    events: list[ProgressEvent] = []
    await asyncfetch.fetch(url, tmp_path / "m.bin", progress=events.append, chunk_size=CHUNK)
    kinds = [e.kind for e in events]
    assert kinds[0] == "started"
    assert kinds[-2:] == ["verified", "done"]
    assert sum(e.delta for e in events if e.kind == "bytes") == len(payload)
    assert events[-1].done == len(payload) == events[-1].total


@http_only  # a plain forward proxy; the fault server does not tunnel CONNECT for https
async def test_proxy_from_environment_is_used(
    make_server: object, payload: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy: FaultServer = make_server()  # type: ignore[operator]
    proxy.add_file("m.bin", payload)
    monkeypatch.setenv("http_proxy", proxy.base_url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    unreachable = "http://127.0.0.1:9/files/m.bin"  # nothing listens on the discard port

    result = await asyncfetch.fetch(unreachable, tmp_path / "m.bin", retry=0)

    assert result.sha256 == sha256(payload)
    assert proxy.gets("m.bin")


async def test_cancellation_keeps_the_part_and_leaves_no_target(
    server: FaultServer, tmp_path: Path
) -> None:
    data = make_payload(4 << 20, seed=5)
    server.add_file("big.bin", data)
    url = server.url("big.bin", rate=2 << 20)
    dest = tmp_path / "big.bin"
    task = asyncio.create_task(asyncfetch.fetch(url, dest, chunk_size=CHUNK, connections=2))
    await asyncio.sleep(0.6)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not dest.exists()
    names = leftovers(tmp_path)
    assert any(n.endswith(".part") for n in names)
    assert any(n.endswith(".part.json") for n in names)


async def test_a_range_that_keeps_breaking_but_gains_bytes_waits_only_the_first_backoff(
    server: FaultServer, tmp_path: Path
) -> None:
    data = make_payload(1_000_000, seed=11)
    server.add_file("m.bin", data)
    url = server.url("m.bin", reset_after=100_000)  # every answer breaks
    policy, sleeps = no_wait(attempts=3)

    await asyncfetch.fetch(url, tmp_path / "m.bin", connections=1, retry=policy)

    assert (tmp_path / "m.bin").read_bytes() == data
    assert len(sleeps.waits) >= 9
    assert max(sleeps.waits) <= policy.backoff_initial + policy.jitter  # no doubling


async def test_a_server_that_cuts_every_answer_after_a_few_bytes_fails_after_the_tries(
    server: FaultServer, tmp_path: Path
) -> None:
    # 5000 bytes a try would take 200 tries for this file: a trickle is no progress
    server.add_file("m.bin", make_payload(1_000_000, seed=12))
    url = server.url("m.bin", truncate_after=5000)
    policy, _ = no_wait(attempts=3)
    dest = tmp_path / "m.bin"

    with pytest.raises(RetriesExhausted) as caught:
        await asyncfetch.fetch(url, dest, connections=1, retry=policy)

    assert caught.value.attempts == 3
    assert len(server.gets("m.bin")) <= 4  # maybe a probe, then the three tries
    assert not dest.exists()


async def test_a_range_taken_over_while_its_worker_waits_to_retry_is_not_asked_for_again(
    server: FaultServer, tmp_path: Path
) -> None:
    data = make_payload(4 * 1024 * 1024, seed=5)
    server.add_file("m.bin", data)
    url = server.url("m.bin", reset_after=300_000, times=1)  # the first range breaks once
    policy = asyncfetch.RetryPolicy(attempts=3, jitter=0, sleep=lambda _: asyncio.sleep(2.0))
    # its worker really waits 2 s: long enough for the other one to finish its own range and
    # take over the rest of this one (a range watched 1 s and 2x slower is taken over whole)

    result = await asyncfetch.fetch(
        url, tmp_path / "m.bin", connections=2, chunk_size=2 * 1024 * 1024, retry=policy
    )

    assert (tmp_path / "m.bin").read_bytes() == data
    answers = [(r.headers.get("Range"), r.status) for r in server.gets("m.bin")]
    assert all(status == 206 for _, status in answers), answers  # no empty range, no 200
    assert result.retries == 1


# credentials in the URL ---------------------------------------------------------------------


@pytest.mark.parametrize("hops", [0, 1])
async def test_credentials_in_the_url_go_with_every_request(
    server: FaultServer, payload: bytes, tmp_path: Path, hops: int
) -> None:
    server.add_file("m.bin", payload)
    url = with_credentials(server.url("m.bin", auth=AUTH, redirect=hops), AUTH)

    result = await asyncfetch.fetch(url, tmp_path / "m.bin", chunk_size=CHUNK, connections=4)

    assert result.sha256 == sha256(payload)
    assert [r.status for r in server.requests if r.status == 401] == []
    assert {r.headers.get("Authorization") for r in server.requests} == {basic(AUTH)}
    assert len([r for r in server.gets("m.bin") if r.range not in (None, (0, 0))]) > 2


async def test_credentials_stay_behind_on_a_redirect_to_another_origin(
    server: FaultServer, make_server: object, payload: bytes, tmp_path: Path
) -> None:
    mirror: FaultServer = make_server()  # type: ignore[operator]
    mirror.add_file("m.bin", payload)
    server.add_file("m.bin", payload)
    redirecting = server.url("m.bin", auth=AUTH, redirect_to=mirror.url("m.bin"))

    result = await asyncfetch.fetch(
        with_credentials(redirecting, AUTH), tmp_path / "m.bin", chunk_size=CHUNK
    )

    assert result.sha256 == sha256(payload)
    assert {r.headers.get("Authorization") for r in server.requests} == {basic(AUTH)}
    assert len(mirror.gets("m.bin")) > 2
    assert [r for r in mirror.requests if "Authorization" in r.headers] == []


async def test_an_authorization_header_wins_over_the_urls_credentials(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    url = with_credentials(server.url("m.bin", auth=AUTH), "user:stale")

    result = await asyncfetch.fetch(
        url, tmp_path / "m.bin", headers={"authorization": basic(AUTH)}, chunk_size=CHUNK
    )

    assert result.sha256 == sha256(payload)
    assert {r.headers.get("Authorization") for r in server.requests} == {basic(AUTH)}


async def test_a_refused_password_is_not_shown(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    plain = server.url("m.bin", auth=AUTH)
    events: list[ProgressEvent] = []

    with pytest.raises(HTTPStatusError) as caught:
        await asyncfetch.fetch(
            with_credentials(plain, "user:hunter2"), tmp_path / "m.bin", progress=events.append
        )

    assert caught.value.status == 401
    assert caught.value.url == with_credentials(plain, "user:***")
    assert str(caught.value).startswith(f"{with_credentials(plain, 'user:***')}: HTTP 401")
    assert events
    assert "hunter2" not in repr(events)
    assert leftovers(tmp_path) == []


async def test_no_password_is_logged_or_written_beside_the_file(
    server: FaultServer,
    make_server: object,
    payload: bytes,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.add_file("m.bin", payload)
    url = with_credentials(server.url("m.bin", auth=AUTH, reset_after=100_000, times=1), AUTH)
    gone: FaultServer = make_server()  # type: ignore[operator]
    mirror = with_credentials(gone.url("m.bin"), "user:hunter2")  # 404: dropped, with a warning
    dest = tmp_path / "m.bin"

    with pytest.raises(FetchError) as caught:
        await asyncfetch.fetch(url, dest, chunk_size=CHUNK, connections=1, retry=0)
    [journal] = [(tmp_path / n).read_text() for n in leftovers(tmp_path) if n.endswith(".json")]
    resumed = await asyncfetch.fetch(url, dest, mirrors=[mirror], chunk_size=CHUNK)
    again = await asyncfetch.fetch(url, dest, mirrors=[mirror])

    assert resumed.resumed_bytes == 100_000  # the journal, with the password masked, matched
    assert again.cached  # and so did the marker
    marker = json.dumps(stored_marker(dest))
    assert with_credentials(server.base_url, "user:***") in journal
    assert with_credentials(server.base_url, "user:***") in marker
    assert "dropping source" in caplog.text
    shown = [journal, marker, caplog.text, str(caught.value), repr(caught.value.__dict__)]
    shown += [repr(resumed)]
    assert [text for text in shown if "open-sesame@" in text or "hunter2" in text] == []


async def test_the_callers_authorization_stays_behind_on_a_redirect_to_another_origin(
    server: FaultServer, make_server: object, payload: bytes, tmp_path: Path
) -> None:
    cdn: FaultServer = make_server()  # type: ignore[operator]
    cdn.add_file("m.bin", payload)
    server.add_file("m.bin", payload)
    redirecting = server.url("m.bin", redirect_to=cdn.url("m.bin"))
    headers = {"Authorization": "Bearer secret", "Cookie": "session=1", "X-Client": "yes"}

    result = await asyncfetch.fetch(redirecting, tmp_path / "m.bin", headers=headers,
                                    chunk_size=CHUNK)  # fmt: skip

    assert result.sha256 == sha256(payload)
    assert {r.headers.get("Authorization") for r in server.requests} == {"Bearer secret"}
    assert len(cdn.gets("m.bin")) > 2  # the ranges went straight to the CDN
    assert [r.headers for r in cdn.requests if {"Authorization", "Cookie"} & set(r.headers)] == []
    assert {r.headers.get("X-Client") for r in cdn.requests} == {"yes"}


def write_netrc(directory: Path, monkeypatch: pytest.MonkeyPatch, userinfo: str) -> None:
    """A ``.netrc`` with ``userinfo`` for 127.0.0.1, where NETRC points (never the real one)."""
    login, _, password = userinfo.partition(":")
    netrc = directory / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {login} password {password}\n")
    monkeypatch.setenv("NETRC", str(netrc))


async def test_netrc_credentials_go_with_every_request(
    server: FaultServer, payload: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_netrc(tmp_path, monkeypatch, AUTH)
    server.add_file("m.bin", payload)
    dest = tmp_path / "out" / "m.bin"
    dest.parent.mkdir()

    result = await asyncfetch.fetch(server.url("m.bin", auth=AUTH), dest, chunk_size=CHUNK)

    assert result.sha256 == sha256(payload)
    assert {r.headers.get("Authorization") for r in server.gets("m.bin")} == {basic(AUTH)}


@pytest.mark.parametrize("name", ["Authorization", "authorization"])
async def test_an_authorization_header_wins_over_netrc(
    server: FaultServer,
    payload: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    write_netrc(tmp_path, monkeypatch, "user:stale")
    server.add_file("m.bin", payload)
    dest = tmp_path / "out" / "m.bin"
    dest.parent.mkdir()

    result = await asyncfetch.fetch(server.url("m.bin", auth=AUTH, redirect=1), dest,
                                    headers={name: basic(AUTH)}, chunk_size=CHUNK)  # fmt: skip

    assert result.sha256 == sha256(payload)
    assert {r.headers.get("Authorization") for r in server.requests} == {basic(AUTH)}


async def test_the_urls_credentials_win_over_netrc(
    server: FaultServer, payload: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_netrc(tmp_path, monkeypatch, "user:stale")
    server.add_file("m.bin", payload)
    dest = tmp_path / "out" / "m.bin"
    dest.parent.mkdir()
    url = with_credentials(server.url("m.bin", auth=AUTH), AUTH)

    result = await asyncfetch.fetch(url, dest, chunk_size=CHUNK)

    assert result.sha256 == sha256(payload)
    assert {r.headers.get("Authorization") for r in server.requests} == {basic(AUTH)}


# destinations that are not regular files ----------------------------------------------------


async def refused_by(entry: str, url: str, dest: Path, digest: str) -> BaseException | None:
    """The error ``entry`` (fetch, fetch-sha256, download, fetch_many) ends with, if any."""
    try:
        if entry == "fetch_many":
            items = [i async for i in asyncfetch.fetch_many([{"url": url, "dest": dest}])]
            return items[0].error
        if entry == "download":
            await asyncio.to_thread(asyncfetch.download, url, dest)
        else:
            await asyncfetch.fetch(url, dest, sha256=digest if entry == "fetch-sha256" else None)
    except asyncfetch.FetchError as exc:
        return exc
    return None


@pytest.mark.timeout(30)  # before the fix, fetch with sha256 opened the FIFO to hash it: a hang
@pytest.mark.parametrize("kind", SPECIAL_KINDS)
@pytest.mark.parametrize("entry", ["fetch", "fetch-sha256", "download", "fetch_many"])
async def test_a_target_that_is_not_a_regular_file_is_refused_untouched(
    server: FaultServer, tmp_path: Path, kind: str, entry: str
) -> None:
    data = make_payload(12)
    url = server.add_file("m.bin", data)
    special = make_special(tmp_path / "special", kind)
    kinds = special.stat().st_mode

    error = await refused_by(entry, url, special, sha256(data))

    assert isinstance(error, DestinationError)
    assert f"{special} is not a regular file" in str(error)
    assert "choose a file path" in str(error)
    assert error.path == str(special)
    assert special.stat().st_mode == kinds  # still the FIFO or device
    assert os.listdir(tmp_path) == ["special"]  # nothing written beside it
    assert server.requests == []


async def test_a_hash_prefix_is_checked_by_the_one_finish_and_a_mismatch_fails(
    server: FaultServer, tmp_path: Path
) -> None:
    from asyncfetch._engine.fetch import run
    from asyncfetch._engine.request import make_request
    from asyncfetch._expectation import HashPrefix
    from asyncfetch._options import make_options

    data = make_payload(300_000, seed=61)
    url = server.add_file("m.bin", data)
    wrong = "0" if not sha256(data).startswith("0") else "f"
    events: list[asyncfetch.ProgressEvent] = []
    options = make_options(progress=events.append, connections=4, chunk_size=64 << 10)
    request = make_request(url, tmp_path / "m.bin", options, expected=HashPrefix(wrong))

    with pytest.raises(asyncfetch.HashPrefixMismatch, match=f"does not start with {wrong}"):
        await run(request)

    assert events[-1].kind == "failed"  # not done: nothing was put in place
    assert "done" not in [e.kind for e in events]
    assert leftovers(tmp_path) == []  # no target, no staged copy, no part, no marker
    right = make_request(url, tmp_path / "m.bin", options, expected=HashPrefix(sha256(data)[:8]))
    assert (await run(right)).sha256 == sha256(data)
    assert leftovers(tmp_path) == ["m.bin"]


def test_every_request_names_the_package_and_its_version(
    server: FaultServer, tmp_path: Path
) -> None:
    data = make_payload(3 << 20, seed=9)
    url = server.add_file("ua.bin", data)
    asyncfetch.download(url, tmp_path / "ua.bin", connections=2, chunk_size=1 << 20)
    agents = {record.headers.get("User-Agent") for record in server.gets("ua.bin")}
    assert agents == {f"asyncfetch/{asyncfetch.__version__}"}
