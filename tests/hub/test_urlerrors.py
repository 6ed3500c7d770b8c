"""Code written for torch.hub keeps working: the same ``except`` clauses catch torch.hub's and
the drop-ins' errors on the same failing loopback URLs, and ``socket.setdefaulttimeout`` is
the drop-ins' default timeout."""

from __future__ import annotations

import pickle
import socket
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch.hub

import asyncfetch
from asyncfetch import ConnectionFailed, FetchTimeout, HTTPStatusError, RetriesExhausted
from asyncfetch._hub.urlerrors import urllib_error
from tests.faultserver import FaultServer

pytestmark = pytest.mark.torch

Loader = Callable[[str, str], Any]


def _torch_hub(url: str, model_dir: str) -> Any:
    return torch.hub.load_state_dict_from_url(url, model_dir=model_dir, progress=False)


def _asyncfetch(url: str, model_dir: str) -> Any:
    return asyncfetch.load_state_dict_from_url(url, model_dir=model_dir, progress=False, retry=1)


def _download_url_to_file(url: str, model_dir: str) -> Any:
    asyncfetch.download_url_to_file(url, str(Path(model_dir) / "m.pt"), progress=False, retry=1)


LOADERS = [_torch_hub, _asyncfetch, _download_url_to_file]


@pytest.fixture
def default_timeout_1s() -> Iterator[None]:
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(1)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def _refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/model.pt"


def _caught(load: Loader, url: str, model_dir: Path) -> str:
    """Which of the usual torch.hub recipes' clauses catches ``load``'s error."""
    try:
        load(url, str(model_dir))
    except urllib.error.HTTPError as exc:
        return f"HTTPError {exc.code}"
    except urllib.error.URLError:
        return "URLError"
    except TimeoutError:
        return "TimeoutError"
    return "nothing"


@pytest.mark.parametrize("load", LOADERS, ids=lambda f: f.__name__.strip("_"))
def test_a_refused_connection_is_a_url_error(load: Loader, tmp_path: Path) -> None:
    assert _caught(load, _refused_url(), tmp_path) == "URLError"


@pytest.mark.parametrize("load", LOADERS, ids=lambda f: f.__name__.strip("_"))
def test_a_404_is_an_http_error_with_its_code(
    load: Loader, server: FaultServer, tmp_path: Path
) -> None:
    assert _caught(load, server.url("missing.pt"), tmp_path) == "HTTPError 404"


@pytest.mark.usefixtures("default_timeout_1s")
@pytest.mark.parametrize("load", LOADERS, ids=lambda f: f.__name__.strip("_"))
def test_a_stall_is_a_timeout_error_within_the_default_timeout(
    load: Loader, server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("model.pt", b"x" * 100_000)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        load(server.url("model.pt", stall_after=10), str(tmp_path))
    assert time.monotonic() - started < 15  # 2 tries of 1 s, not the 30 s read timeout


def test_the_twins_keep_their_class_message_and_attributes_through_pickling() -> None:
    status = HTTPStatusError("http://u:pw@h/m.pt: HTTP 403", url="http://u:pw@h/m.pt", status=403)
    stalled = RetriesExhausted(
        "bytes 0-9 failed", url="http://h/m.pt", byte_range=(0, 10), attempts=2,
        failures={"http://h/m.pt": "timed out"},
    )  # fmt: skip
    stalled.__cause__ = FetchTimeout("timed out", url="http://h/m.pt")
    refused = ConnectionFailed("refused", url="http://h/m.pt")
    for error, extra in ((status, urllib.error.HTTPError), (stalled, TimeoutError),
                         (refused, urllib.error.URLError)):  # fmt: skip
        twin = pickle.loads(pickle.dumps(urllib_error(error)))
        assert isinstance(twin, type(error))
        assert isinstance(twin, extra)
        assert isinstance(twin, urllib.error.URLError)
        assert str(twin) == str(error)
        assert "pw" not in str(twin)
        assert vars(error).items() <= vars(twin).items()
    twin = pickle.loads(pickle.dumps(urllib_error(status)))
    assert isinstance(twin, urllib.error.HTTPError)
    assert twin.code == 403
    assert twin.url == "http://u:***@h/m.pt"
