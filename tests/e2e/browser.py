"""Driving the console in headless Chromium from the OS packages: logging in with a one-time link
and visiting pages, a screenshot of each written to build/console/."""
from __future__ import annotations

import json
import shutil
import ssl
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

SHOTS = Path(__file__).resolve().parents[2] / "build" / "console"


def chromium() -> webdriver.Chrome:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.fail("Chromium and its driver are needed: apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                 "--ignore-certificate-errors"):   # the federation's CA is not the browser's; TLS is tested elsewhere
        options.add_argument(flag)
    SHOTS.mkdir(parents=True, exist_ok=True)
    return webdriver.Chrome(options=options, service=Service(driver))


def log_in(browser: webdriver.Chrome, fed, who: str) -> None:
    """POST /v1/console/sessions with `who`'s certificate, then follow the link it answers."""
    pki = fed.pki
    context = ssl.create_default_context(cafile=str(pki["ca"].cert))
    context.load_cert_chain(str(pki[who].cert), str(pki[who].key))
    request = urllib.request.Request(f"https://127.0.0.1:{fed.http_port}/v1/console/sessions", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=10) as r:
        link = json.loads(r.read())["url"]
    browser.delete_all_cookies()
    browser.get(f"https://127.0.0.1:{fed.http_port}{link}")


def visit(browser: webdriver.Chrome, fed, path: str, shot: str = "") -> str:
    browser.get(f"https://127.0.0.1:{fed.http_port}{path}")
    if shot:
        browser.save_screenshot(str(SHOTS / f"{shot}.png"))
    return browser.page_source
