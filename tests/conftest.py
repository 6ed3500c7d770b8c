"""Shared fixtures: a fault-injecting file server, extra servers as mirrors, a test payload.

The servers speak http unless the module overrides the ``scheme`` fixture (see
:func:`tests.helpers.over_http_and_https`); an https server's test CA is trusted through
``REQUESTS_CA_BUNDLE``, as a user trusts a private CA, so every entry point (the CLI in a
child process too) trusts it without being told.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faultserver import FaultServer, make_payload
from tests.faultserver.tls import ca_path


def pytest_configure(config: pytest.Config) -> None:
    """Give the suite back the default Ctrl-C when it was started ignoring SIGINT.

    A runner that starts it in the background (``make test &`` in a script without job
    control, or under nohup) makes it ignore SIGINT, and every child inherits that: the tests
    that stop a download with Ctrl-C would send a SIGINT their child never sees.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


PAYLOAD_SIZE = (1 << 20) + 12345  # 1 MiB + 12345: not a multiple of any power of two


@pytest.fixture(autouse=True)
def no_users_netrc(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Point NETRC at an empty file, so the user's ~/.netrc never takes part (a test that
    wants one writes it and points NETRC there; a missing file would make aiohttp warn)."""
    empty = tmp_path_factory.getbasetemp() / "empty-netrc"
    empty.touch()
    monkeypatch.setenv("NETRC", str(empty))


@pytest.fixture(autouse=True)
def private_state_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Point ASYNCFETCH_STATE_DIR at a directory of the test's own, so trust records never
    land in the user's ~/.local/state (nor carry from one test to the next)."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("ASYNCFETCH_STATE_DIR", str(state))
    return state


@pytest.fixture(params=["auto", "state"])
def trust_record(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with trust records as extended attributes (where the filesystem has
    them: ``auto``) and in the state directory (``ASYNCFETCH_TRUST_RECORD=state``)."""
    mode: str = request.param
    monkeypatch.setenv("ASYNCFETCH_TRUST_RECORD", mode)
    return mode


CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


@pytest.fixture(autouse=True)
def no_users_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset the variables that name a CA bundle, so the machine's never take part (an https
    server fixture then sets one to the test CA)."""
    for name in CA_BUNDLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def scheme() -> str:
    """The scheme the ``server`` fixtures speak: http, unless a module overrides it."""
    return "http"


def _trusted(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> FaultServer:
    """``server``, its test CA trusted through REQUESTS_CA_BUNDLE when it speaks https."""
    if server.scheme == "https":
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_path()))
    return server


@pytest.fixture
def server(scheme: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultServer]:
    """A started FaultServer speaking ``scheme``, stopped after the test."""
    with FaultServer(tls=scheme == "https") as started:
        yield _trusted(started, monkeypatch)


@pytest.fixture
def make_server(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], FaultServer]]:
    """Factory of further started FaultServers (stand-ins for mirrors) speaking ``scheme``,
    all stopped at teardown."""
    with contextlib.ExitStack() as stack:

        def factory() -> FaultServer:
            started = stack.enter_context(FaultServer(tls=scheme == "https"))
            return _trusted(started, monkeypatch)

        yield factory


@pytest.fixture
def payload() -> bytes:
    """Deterministic pseudo-random bytes, 1 MiB + 12345 long."""
    return make_payload(PAYLOAD_SIZE)
