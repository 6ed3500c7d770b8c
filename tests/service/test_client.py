"""``asyncfetch.ServiceClient`` (async and sync) and ``asyncfetch submit`` / ``jobs`` against a
running ``asyncfetch serve`` on loopback, a FaultServer upstream."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncfetch import ServiceClient, ServiceError, SyncServiceClient
from asyncfetch._service.guard import Guard
from tests.faultserver import FaultServer
from tests.faultserver.tls import authority, ca_path
from tests.helpers import cli_env, sha256
from tests.service.test_app import running
from tests.service.test_jobs import serve_process

TOKEN = "k" * 32


async def test_submit_wait_list_and_cancel(
    tmp_path: Path, server: FaultServer, payload: bytes
) -> None:
    url = server.add_file("m.bin", payload)
    server.add_file("slow.bin", payload)
    async with (
        running(tmp_path / "cache", guard=Guard(token=TOKEN)) as svc,
        ServiceClient(svc.url, token=TOKEN) as service,
    ):
        job = await service.submit(url, sha256=sha256(payload))
        assert job.state in ("queued", "running")
        done = await service.wait(job.id, poll=0.05, timeout=30)
        assert (done.state, done.bytes, done.total) == ("done", len(payload), len(payload))
        assert done.file == "/v1/files/m.bin"
        slow = await service.submit(server.url("slow.bin", rate=128 << 10))
        cancelled = await service.cancel(slow.id)
        assert cancelled.state == "cancelled"
        assert [j.id for j in await service.jobs("done")] == [job.id]
        assert [j.id for j in await service.jobs()] == [job.id, slow.id]
        with pytest.raises(ServiceError) as bad:
            await service.submit(url, sha256="abc")
        assert (bad.value.status, bad.value.kind) == (400, "InvalidRequest")
        assert "64 hex digits" in str(bad.value)
        async with ServiceClient(svc.url) as anonymous:
            with pytest.raises(ServiceError) as refused:
                await anonymous.jobs()
        assert refused.value.status == 401
    copy = pickle.loads(pickle.dumps(refused.value))
    assert (copy.status, copy.kind, str(copy)) == (401, "Unauthorized", str(refused.value))


def test_an_unreachable_service_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(ServiceError) as unreachable:
        SyncServiceClient("http://127.0.0.1:9", timeout=5).jobs()
    assert unreachable.value.kind == "Unreachable"
    assert "http://127.0.0.1:9" in str(unreachable.value)


def test_the_sync_twin_submits_and_waits(
    tmp_path: Path, server: FaultServer, payload: bytes
) -> None:
    url = server.add_file("m.bin", payload)
    with serve_process(tmp_path / "cache") as (process, service_url):
        service = SyncServiceClient(service_url)
        job = service.wait(service.submit(url).id, poll=0.05, timeout=30)
        with urllib.request.urlopen(service_url + str(job.file), timeout=30) as answer:  # noqa: S310
            assert answer.read() == payload
        process.terminate()
    assert job.state == "done"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncfetch", *args],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip


def test_submit_wait_and_jobs_from_the_command_line(
    tmp_path: Path, server: FaultServer, payload: bytes
) -> None:
    url = server.add_file("m.bin", payload)
    env = cli_env(ASYNCFETCH_SERVICE_TOKEN=TOKEN)
    with serve_process(tmp_path / "cache", env=env) as (process, service_url):
        done = _cli("submit", url, "--sha256", sha256(payload), "--service", service_url,
                    "--wait", "--json", env=env)  # fmt: skip
        failed = _cli("submit", server.url("missing.bin"), "--wait", env=env | {
            "ASYNCFETCH_SERVICE": service_url})  # fmt: skip
        listed = _cli("jobs", "--service", service_url, "--state", "done", env=env)
        refused = _cli("jobs", "--service", service_url, env=cli_env())
        process.terminate()
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert (job["state"], job["bytes"], job["file"]) == ("done", len(payload), "/v1/files/m.bin")
    assert failed.returncode == 1
    assert " failed " in failed.stdout
    assert "404" in failed.stdout
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[:2] == [job["id"], "done"]
    assert refused.returncode == 1
    assert refused.stderr.startswith("asyncfetch: error: GET ")
    assert "401" in refused.stderr
    assert "--token-file FILE or ASYNCFETCH_SERVICE_TOKEN" in refused.stderr  # how to give it
    assert TOKEN not in refused.stderr + done.stdout + failed.stdout


# an https service (serve --tls-cert/--tls-key) and whom its clients trust ---------------------


def certificate_files(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 from the test CA, as serve's --tls-cert and --tls-key."""
    issued = authority().issue_cert("127.0.0.1")
    cert, key = folder / "service.pem", folder / "service.key"
    cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


@pytest.fixture
def https_service(tmp_path: Path) -> Iterator[str]:
    """``asyncfetch serve`` over https, with TOKEN; its URL."""
    cert, key = certificate_files(tmp_path)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    with serve_process(tmp_path / "cache", "--tls-cert", str(cert), "--tls-key", str(key),
                       "--token-file", str(token)) as (_process, url):  # fmt: skip
        yield url


async def test_an_https_service_takes_jobs_from_a_client_trusting_its_ca(
    https_service: str, server: FaultServer, payload: bytes
) -> None:
    assert https_service.startswith("https://127.0.0.1:")
    url = server.add_file("m.bin", payload)
    async with ServiceClient(https_service, token=TOKEN, cacert=ca_path()) as service:
        job = await service.submit(url, sha256=sha256(payload))
        done = await service.wait(job.id, poll=0.05, timeout=30)
    assert done.state == "done"


def test_a_client_not_trusting_the_services_certificate_is_told_how(https_service: str) -> None:
    with pytest.raises(ServiceError) as untrusted:
        SyncServiceClient(https_service, token=TOKEN, timeout=10).jobs()
    assert untrusted.value.kind == "Untrusted"
    assert https_service in str(untrusted.value)
    assert "--cacert" in str(untrusted.value)
    assert "--insecure" not in str(untrusted.value)  # submit and jobs have no such option
    assert TOKEN not in str(untrusted.value)


def test_clients_trust_the_ca_bundles_users_already_set(
    https_service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_path()))
    assert SyncServiceClient(https_service, token=TOKEN, timeout=10).jobs() == []
    listed = subprocess.run(
        [sys.executable, "-m", "asyncfetch", "jobs", "--service", https_service,
         "--token-file", str(tmp_path / "token"), "--cacert", str(ca_path())],
        capture_output=True, text=True, timeout=60, env=cli_env(), check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_serving_beyond_loopback_in_clear_warns(tmp_path: Path, tls: bool) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: serve checks and warns, then
    # cannot listen there, so nothing is ever reachable beyond loopback
    options = ["--tls-cert", "--tls-key"] if tls else []
    files = [str(path) for path in certificate_files(tmp_path)] if tls else []
    done = subprocess.run(
        [sys.executable, "-m", "asyncfetch", "serve", "--host", "192.0.2.1", "--port", "0",
         "--cache-dir", str(tmp_path / "cache"), "--state-dir", str(tmp_path / "state"),
         *[arg for pair in zip(options, files, strict=True) for arg in pair]],
        capture_output=True, text=True, timeout=30, env=cli_env(ASYNCFETCH_SERVICE_TOKEN=TOKEN),
        check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "cannot listen on 192.0.2.1" in done.stderr
    warned = "serving plain http on 192.0.2.1" in done.stderr
    assert warned is not tls
    if warned:
        assert "--tls-cert FILE and --tls-key FILE" in done.stderr
    assert TOKEN not in done.stderr + done.stdout


@pytest.mark.parametrize("given", [["--tls-cert"], ["--tls-key"], ["--tls-cert", "--tls-key"]])
def test_serve_refuses_half_a_certificate_or_a_wrong_one(tmp_path: Path, given: list[str]) -> None:
    wrong = tmp_path / "not-a-certificate.pem"
    wrong.write_text("hello\n")
    args = [arg for flag in given for arg in (flag, str(wrong))]
    done = subprocess.run(
        [sys.executable, "-m", "asyncfetch", "serve", "--port", "0", "--cache-dir",
         str(tmp_path / "cache"), "--state-dir", str(tmp_path / "state"), *args],
        capture_output=True, text=True, timeout=60, env=cli_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("asyncfetch: error: ")
    assert ("give both" in done.stderr) == (len(given) == 1)
    assert ("not-a-certificate.pem" in done.stderr) == (len(given) == 2)
