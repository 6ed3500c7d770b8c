"""TLS trust (_transport/tls): a private CA fails at once with a hint; --cacert, cacert= and
the CA bundle variables trust it, in their order; --insecure skips the check and says so."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import trustme

import asyncfetch
from asyncfetch import CertificateError, InsecureWarning, InvalidRequest
from asyncfetch._config import TLSTrust, env_settings
from asyncfetch._options import Options
from asyncfetch._transport.client import Transport
from asyncfetch._transport.tls import HINT, ssl_context
from tests.faultserver import FaultServer
from tests.helpers import leftovers, run_cli, sha256

INSECURE_LINE = "warning: --insecure: certificates are not checked\n"


@pytest.fixture
def https_server(payload: bytes) -> Iterator[FaultServer]:
    """An https FaultServer serving m.bin, whose CA nothing trusts unless a test says so."""
    with FaultServer(tls=True) as started:
        started.add_file("m.bin", payload)
        yield started


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    """A PEM file of a CA that did not sign the server's certificate."""
    path = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def hashed_dir(ca: Path, folder: Path) -> Path:
    """``folder`` holding ``ca`` under OpenSSL's hashed name, as SSL_CERT_DIR wants."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to name a hashed certificate directory")
    done = subprocess.run(
        [openssl, "x509", "-hash", "-noout", "-in", str(ca)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    folder.mkdir()
    shutil.copy(ca, folder / f"{done.stdout.strip()}.0")
    return folder


# a private CA nobody was told to trust ------------------------------------------------------


@pytest.mark.parametrize("fast_path", ["1", "0"])
async def test_untrusted_ca_fails_at_once_with_the_hint(
    https_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_path: str
) -> None:
    monkeypatch.setenv("ASYNCFETCH_FAST_PATH", fast_path)
    url = https_server.url("m.bin")
    started = time.monotonic()

    with pytest.raises(CertificateError) as caught:
        await asyncfetch.fetch(url, tmp_path / "m.bin", retry=5)  # the real backoff, 0.5 s up

    assert time.monotonic() - started < 1.0
    assert https_server.handshakes == 1  # no retry
    assert https_server.requests == []  # no request got through
    message = str(caught.value)
    assert message.startswith(f"{url}: certificate verify failed (unable to get local issuer")
    assert "trusted: the system store" in message
    assert message.endswith(HINT)
    assert "\n" not in message
    assert isinstance(caught.value, ssl.SSLCertVerificationError)  # as other clients raise
    assert caught.value.verify_code == 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert not caught.value.retryable
    assert leftovers(tmp_path) == []


def test_cli_untrusted_ca_is_one_line_and_exit_1(https_server: FaultServer, tmp_path: Path) -> None:
    url = https_server.url("m.bin")

    done = run_cli("get", url, "-o", str(tmp_path / "m.bin"), "--no-progress")

    assert done.returncode == 1
    assert done.stderr.startswith(f"asyncfetch: error: {url}: certificate verify failed (")
    assert done.stderr.endswith(f"{HINT}\n")
    assert done.stderr.count("\n") == 1
    assert https_server.handshakes == 1


# trusting it -----------------------------------------------------------------------------------


async def test_cacert_trusts_a_private_ca(
    https_server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url = https_server.url("m.bin")
    result = await asyncfetch.fetch(url, tmp_path / "m.bin", cacert=https_server.ca_path)
    assert result.sha256 == sha256(payload)
    assert (tmp_path / "m.bin").read_bytes() == payload


def test_cli_cacert_trusts_a_private_ca(
    https_server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url, out = https_server.url("m.bin"), tmp_path / "m.bin"
    done = run_cli("get", url, "-o", str(out), "--cacert", str(https_server.ca_path), "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert out.read_bytes() == payload


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"])
async def test_a_bundle_variable_trusts_a_private_ca(
    https_server: FaultServer,
    payload: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, str(https_server.ca_path))
    result = await asyncfetch.fetch(https_server.url("m.bin"), tmp_path / "m.bin")
    assert result.sha256 == sha256(payload)


async def test_ssl_cert_dir_trusts_a_hashed_directory(
    https_server: FaultServer, payload: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_DIR", str(hashed_dir(https_server.ca_path, tmp_path / "certs")))
    result = await asyncfetch.fetch(https_server.url("m.bin"), tmp_path / "m.bin")
    assert result.sha256 == sha256(payload)


def test_cli_trusts_requests_ca_bundle(
    https_server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url, out = https_server.url("m.bin"), tmp_path / "m.bin"
    done = run_cli("get", url, "-o", str(out), REQUESTS_CA_BUNDLE=str(https_server.ca_path))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == payload


async def test_a_callers_session_trusts_cacert_when_given(
    https_server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession() as session:  # trusts only the system store
        result = await asyncfetch.fetch(
            https_server.url("m.bin"), tmp_path / "m.bin", session=session,
            cacert=https_server.ca_path,
        )  # fmt: skip
    assert result.sha256 == sha256(payload)


async def test_fetch_many_and_rank_mirrors_take_cacert(
    https_server: FaultServer, tmp_path: Path
) -> None:
    url = https_server.url("m.bin")
    items = [
        item
        async for item in asyncfetch.fetch_many(
            [url], dest_dir=tmp_path, cacert=https_server.ca_path
        )
    ]
    assert [item.error for item in items] == [None]
    reports = await asyncfetch.rank_mirrors([url], sample=1 << 16, cacert=https_server.ca_path)
    assert [(r.ok, r.error) for r in reports] == [(True, None)]


# which one wins --------------------------------------------------------------------------------


def test_the_environment_is_read_in_order() -> None:
    order = ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"]
    for first in range(len(order)):
        env = {name: f"/ca/{name}.pem" for name in order[first:]}
        bundle = env_settings(env).ca_bundle
        assert bundle is not None
        assert bundle.origin == f"{order[first]}=/ca/{order[first]}.pem"
    both = env_settings({"SSL_CERT_FILE": "/a.pem", "SSL_CERT_DIR": "/certs"}).ca_bundle
    assert both is not None
    assert (both.cafile, both.capath) == (Path("/a.pem"), Path("/certs"))
    assert env_settings({"REQUESTS_CA_BUNDLE": " ", "CURL_CA_BUNDLE": ""}).ca_bundle is None


@pytest.mark.parametrize(
    ("winner", "loser"),
    [
        ("cacert", "REQUESTS_CA_BUNDLE"),
        ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"),
        ("CURL_CA_BUNDLE", "SSL_CERT_FILE"),
    ],
)
async def test_the_first_bundle_replaces_the_rest(
    https_server: FaultServer,
    other_ca: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    winner: str,
    loser: str,
) -> None:
    """The server's CA named by the first source in the order succeeds with the other CA in
    the next; swapped, it fails, naming the first source as what was trusted."""
    url = https_server.url("m.bin")
    for number, (right, wrong) in enumerate([(https_server.ca_path, other_ca),
                                             (other_ca, https_server.ca_path)]):  # fmt: skip
        cacert = None
        for name, path in ((winner, right), (loser, wrong)):
            if name == "cacert":
                cacert = path
            else:
                monkeypatch.setenv(name, str(path))
        dest = tmp_path / f"m{number}.bin"
        if right == https_server.ca_path:
            await asyncfetch.fetch(url, dest, cacert=cacert)
            continue
        with pytest.raises(CertificateError, match=f"trusted: {winner}={other_ca}"):
            await asyncfetch.fetch(url, dest, cacert=cacert)


def test_a_bundle_replaces_the_system_store(https_server: FaultServer) -> None:
    context = ssl_context(TLSTrust(cacert=https_server.ca_path), env_settings({}))
    trusted = context.get_ca_certs()
    assert [dict(c["subject"][0])["organizationName"] for c in trusted] == ["asyncfetch tests"]


# a bundle that cannot be used -------------------------------------------------------------------


async def test_a_missing_cacert_is_an_invalid_request(
    https_server: FaultServer, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(InvalidRequest, match=f"CA bundle cacert={missing}: no such file"):
        await asyncfetch.fetch(https_server.url("m.bin"), tmp_path / "m.bin", cacert=missing)
    assert https_server.handshakes == 0


async def test_a_bundle_without_certificates_names_its_variable(
    https_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(junk))
    with pytest.raises(InvalidRequest, match=f"REQUESTS_CA_BUNDLE={junk}: no usable certificate"):
        await asyncfetch.fetch(https_server.url("m.bin"), tmp_path / "m.bin")


def test_cacert_and_insecure_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="not both"):
        asyncfetch.download("https://127.0.0.1:9/m.bin", tmp_path / "m", cacert="a", insecure=True)
    done = run_cli("get", "https://127.0.0.1:9/m.bin", "--cacert", "a.pem", "--insecure")
    assert done.returncode == 2
    assert "not allowed with argument" in done.stderr


# --insecure ------------------------------------------------------------------------------------


async def test_insecure_skips_the_check_and_warns(
    https_server: FaultServer, other_ca: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other_ca))  # insecure wins over a bundle
    with pytest.warns(InsecureWarning, match="certificates are not checked"):
        await asyncfetch.fetch(https_server.url("m.bin"), tmp_path / "m.bin", insecure=True)
    assert (tmp_path / "m.bin").exists()


def test_cli_insecure_warns_on_every_run(
    https_server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url, out = https_server.url("m.bin"), tmp_path / "m.bin"
    first = run_cli("get", url, "-o", str(out), "--insecure")
    again = run_cli("get", url, "-o", str(out), "--insecure")  # a cache hit
    for done in (first, again):
        assert done.returncode == 0, done.stderr
        assert done.stderr == INSECURE_LINE
    assert out.read_bytes() == payload


async def test_the_system_store_is_the_default(https_server: FaultServer, payload: bytes) -> None:
    import truststore

    url = https_server.url("m.bin")
    async with Transport(Options()) as transport:
        assert isinstance(transport.ssl_context, truststore.SSLContext)  # the OS's, as pip
        with pytest.raises(CertificateError, match="trusted: the system store"):
            await transport.probe(url)
        transport.ssl_context.load_verify_locations(https_server.ca_path)  # "the OS trusts it"
        assert (await transport.probe(url)).size == len(payload)
