"""``make screenshot``: the status page of ``asyncfetch serve`` with a few jobs, as
docs/img/status-page.png (headless chromium; a loopback fault server stands in for the web)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faultserver import FaultServer, make_payload  # noqa: E402

OUT = ROOT / "docs" / "img" / "status-page.png"


def _post(url: str, body: object) -> object:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (loopback)
        return json.loads(answer.read())


def main() -> None:
    """Serve, submit, photograph."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as Driver

    with tempfile.TemporaryDirectory() as tmp, FaultServer() as server:
        for name, size in (("resnet50.pth", 3 << 20), ("vit-b16.safetensors", 24 << 20),
                           ("bert-base.bin", 24 << 20)):  # fmt: skip
            server.add_file(name, make_payload(size))
        serve = subprocess.Popen(
            [sys.executable, "-m", "asyncfetch", "serve", "--port", "0", "--allow-private",
             "--cache-dir", f"{tmp}/cache", "--state-dir", f"{tmp}/state"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            assert serve.stdout is not None
            found = re.search(r"http://\S+", serve.stdout.readline())
            assert found, "asyncfetch serve did not start"
            base = found.group(0)
            _post(f"{base}/v1/jobs", [
                {"url": server.url("resnet50.pth")},
                {"url": server.url("vit-b16.safetensors", rate=1 << 20, no_ranges=True)},
                {"url": server.url("bert-base.bin", rate=2 << 20, no_ranges=True)},
                {"url": server.url("missing.bin")},
            ])  # fmt: skip
            options = webdriver.ChromeOptions()
            for flag in ("--headless=new", "--no-sandbox", "--window-size=1100,480"):
                options.add_argument(flag)
            options.binary_location = str(shutil.which("chromium"))
            driver = webdriver.Chrome(service=Driver(str(shutil.which("chromedriver"))),
                                      options=options)  # fmt: skip
            try:
                driver.get(base + "/")
                time.sleep(4)  # progress arrives a receive buffer at a time
                OUT.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(OUT))
            finally:
                driver.quit()
        finally:
            serve.terminate()
            serve.wait(timeout=30)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
