"""The status page (``GET /``) in a real headless browser: Debian's chromium and chromedriver,
driven by selenium, against ``asyncfetch serve`` on loopback with a token.

Skipped, saying why, where chromium, chromedriver or selenium is missing (``make test`` installs
them where it can); under ``CI=true`` a missing browser fails the run instead.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faultserver import FaultServer, make_payload
from tests.helpers import cli_env
from tests.service.test_client import certificate_files
from tests.service.test_jobs import serve_process

TOKEN = "p" * 32
WAIT_S = 20.0


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless chromium through chromedriver, or a skip (a failure under CI=true)."""
    with _chromium() as driver:
        yield driver


@contextlib.contextmanager
def _chromium(*flags: str) -> Iterator[Any]:
    why = _missing()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test cannot run under CI: {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as Driver

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,700", *flags):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Driver(str(shutil.which("chromedriver"))), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _trusting_only(cert: Path) -> str:
    """The chromium flag that accepts this one certificate (by its public key) and no other
    the browser does not already trust: the test CA is not in chromium's store."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "--ignore-certificate-errors-spki-list=" + base64.b64encode(
        hashlib.sha256(spki).digest()
    ).decode("ascii")


def _wait(browser: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT_S, poll_frequency=0.1).until(condition)


def _row(browser: Any, name: str) -> Any:
    from selenium.webdriver.common.by import By

    for tr in browser.find_elements(By.CSS_SELECTOR, "#jobs tr"):
        if tr.find_element(By.CSS_SELECTOR, ".name").text == name:
            return tr
    return None


def _state(browser: Any, name: str) -> str:
    from selenium.webdriver.common.by import By

    tr = _row(browser, name)
    return "" if tr is None else tr.find_element(By.CSS_SELECTOR, ".state").text


def _submit(browser: Any, url: str) -> None:
    from selenium.webdriver.common.by import By

    field = browser.find_element(By.ID, "url")
    field.clear()
    field.send_keys(url)
    browser.find_element(By.CSS_SELECTOR, "#submit-form button").click()


def test_the_page_submits_follows_progress_and_cancels(
    browser: Any, tmp_path: Path, server: FaultServer
) -> None:
    from selenium.webdriver.common.by import By

    server.add_file("slow.bin", make_payload(6 << 20, seed=1))
    server.add_file("fast.bin", make_payload(300_000, seed=2))
    env = cli_env(ASYNCFETCH_SERVICE_TOKEN=TOKEN)
    with serve_process(tmp_path / "cache", env=env) as (process, service_url):
        _log_in(browser, service_url)

        # one stream (progress comes a 1 MiB receive buffer at a time): ~2 s a step, 12 s in all
        _submit(browser, server.url("slow.bin", rate=512 << 10, no_ranges=True))
        _wait(browser, lambda b: _state(b, "slow.bin") == "running")
        bar = _row(browser, "slow.bin").find_element(By.TAG_NAME, "progress")
        # no state event comes mid-download: a value now came in the stream's progress events
        _wait(browser, lambda b: float(bar.get_attribute("value") or 0) > 0)
        assert _state(browser, "slow.bin") == "running"
        assert float(bar.get_attribute("max")) == 6 << 20
        _row(browser, "slow.bin").find_element(By.CSS_SELECTOR, "button.cancel").click()
        _wait(browser, lambda b: _state(b, "slow.bin") == "cancelled")

        _submit(browser, server.url("fast.bin"))
        _wait(browser, lambda b: _state(b, "fast.bin") == "done")
        bar = _row(browser, "fast.bin").find_element(By.TAG_NAME, "progress")
        assert float(bar.get_attribute("value")) == float(bar.get_attribute("max")) == 300_000
        assert TOKEN not in browser.current_url
        process.terminate()
    assert (tmp_path / "cache" / "fast.bin").read_bytes() == make_payload(300_000, seed=2)
    log = (tmp_path / "serve.log").read_text()
    assert TOKEN not in log


def _log_in(browser: Any, service_url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(service_url + "/")
    _wait(browser, lambda b: "401" in b.find_element(By.ID, "status").text)  # no token yet
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    _wait(browser, lambda b: b.find_element(By.ID, "status").text == "")


def test_the_page_works_over_https(tmp_path: Path, server: FaultServer) -> None:
    from selenium.webdriver.common.by import By

    cert, key = certificate_files(tmp_path)
    server.add_file("fast.bin", make_payload(300_000, seed=3))
    env = cli_env(ASYNCFETCH_SERVICE_TOKEN=TOKEN)
    serving = serve_process(tmp_path / "cache", "--tls-cert", str(cert), "--tls-key", str(key),
                            env=env)  # fmt: skip
    with serving as (process, service_url), _chromium(_trusting_only(cert)) as browser:
        assert service_url.startswith("https://")
        _log_in(browser, service_url)  # the page's own requests go over https too
        _submit(browser, server.url("fast.bin"))
        _wait(browser, lambda b: _state(b, "fast.bin") == "done")  # live updates over TLS
        bar = _row(browser, "fast.bin").find_element(By.TAG_NAME, "progress")
        assert float(bar.get_attribute("value")) == float(bar.get_attribute("max")) == 300_000
        assert browser.current_url.startswith("https://")
        process.terminate()
    assert (tmp_path / "cache" / "fast.bin").read_bytes() == make_payload(300_000, seed=3)


async def test_the_page_is_served_without_the_token_but_not_to_other_hosts(tmp_path: Path) -> None:
    from asyncfetch._service.guard import Guard
    from tests.service.test_app import running

    async with running(tmp_path / "cache", guard=Guard(token=TOKEN)) as svc:
        async with svc.client.get(svc.url + "/") as page:
            assert page.status == 200
            assert page.content_type == "text/html"
            assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
            assert "Authorization" in await page.text()
        async with svc.client.get(svc.url + "/", headers={"Host": "evil.example"}) as refused:
            assert refused.status == 403
        assert (await svc.get("/v1/jobs"))[0] == 401
