"""A real browser on the live service: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, which scripts/ensure_chromium.sh installs and scripts/run_tests.sh runs
first) loads Swagger UI from ``/docs`` (served from local assets: no CDN here) and the
operator dashboard, signs in with a key and reads what a person would see.

Screenshots go to ``test-artifacts/`` at the repository root (gitignored):
``browser-docs.png``, ``browser-dashboard.png``, ``browser-message.png``. Every wait is for a
DOM element, bounded, never a fixed sleep.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.api.live_server import LiveServer, eventually, live_server
from tests.conftest import ROOT, START, phones

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts"
WAIT_S = 60
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1000")


@dataclass(frozen=True)
class Served:
    server: LiveServer
    token: str
    sent_id: int  # completed: a full bar
    scheduled_id: int  # due next year: an empty bar


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("browser")
    with live_server(directory, "--with-worker", "--quiet", "--mean", "0",
                     "--deviation", "0") as server:
        made = subprocess.run([*START, "apikey", "create", "--tenant", "acme", "--db", "d.db",
                               "--json"], capture_output=True, text=True, cwd=directory,
                              timeout=60)
        assert made.returncode == 0, made.stderr
        token = json.loads(made.stdout)["token"]
        with httpx.Client(base_url=server.url, timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            sent = http.post("/v1/messages", json={"content": "Fire drill at 3 pm <b>today</b>",
                                                   "recipients": phones(40)})
            later = http.post("/v1/messages", json={
                "content": "Quarterly review", "recipients": phones(10, start=100),
                "send_at": "2099-01-01T09:00:00+00:00"})
            assert sent.status_code == later.status_code == 201, sent.text + later.text
            sent_id, scheduled_id = sent.json()["id"], later.json()["id"]
            eventually(lambda: http.get(f"/v1/messages/{sent_id}").json()["status"]
                       == "completed", timeout_s=WAIT_S, what="the message completing",
                       detail=lambda: server.output[-3000:])
        yield Served(server=server, token=token, sent_id=sent_id, scheduled_id=scheduled_id)
        assert server.stop() == 0, server.output[-3000:]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            pytest.fail(f"{path} is missing: run scripts/ensure_chromium.sh (as root, or "
                        "with sudo), which scripts/run_tests.sh runs before the tests")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / name))


def test_swagger_ui_lists_the_operations(served: Served, browser: WebDriver) -> None:
    browser.get(f"{served.server.url}/docs")
    first = WebDriverWait(browser, WAIT_S).until(
        lambda driver: driver.find_elements(By.CSS_SELECTOR, ".opblock-tag-section"))
    browser.execute_script("arguments[0].scrollIntoView()", first[0])
    screenshot(browser, "browser-docs.png")
    operations = set()
    for block in browser.find_elements(By.CSS_SELECTOR, ".opblock"):
        method = block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text
        path = block.find_element(By.CSS_SELECTOR, ".opblock-summary-path")
        shown = path.get_attribute("data-path") or path.text.replace("\u200b", "")
        operations.add((method.upper(), shown))
    assert {("POST", "/v1/messages"), ("GET", "/v1/messages"),
            ("GET", "/healthz")} <= operations, operations
    assert not any(path in {"/", "/login"} for _, path in operations)  # pages, not API


def test_the_dashboard_shows_the_messages_progress_after_signing_in(
        served: Served, browser: WebDriver) -> None:
    browser.get(f"{served.server.url}/")
    field = WebDriverWait(browser, WAIT_S).until(lambda driver: driver.find_element(By.ID,
                                                                                    "key"))
    field.send_keys(served.token)
    browser.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    row = WebDriverWait(browser, WAIT_S).until(
        lambda driver: driver.find_element(By.ID, f"message-{served.sent_id}"))
    screenshot(browser, "browser-dashboard.png")
    bar = row.find_element(By.TAG_NAME, "progress")
    assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("40", "40")
    assert "completed" in row.text and "100%" in row.text
    assert "Fire drill at 3 pm <b>today</b>" in row.text  # shown as text, not markup
    waiting = browser.find_element(By.ID, f"message-{served.scheduled_id}")
    assert waiting.find_element(By.TAG_NAME, "progress").get_attribute("value") == "0"
    assert "scheduled" in waiting.text
    assert browser.find_element(By.ID, "dead-letters").text.startswith("0")
    cookie = browser.get_cookie("sms_sim_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "expiry" not in cookie  # a session cookie: gone when the browser closes

    row.find_element(By.LINK_TEXT, str(served.sent_id)).click()
    WebDriverWait(browser, WAIT_S).until(
        lambda driver: "Deliveries" in driver.find_element(By.TAG_NAME, "main").text)
    screenshot(browser, "browser-message.png")
    assert browser.find_elements(By.XPATH, "//td[text()='sent']")
    assert "Fire drill at 3 pm <b>today</b>" in browser.find_element(
        By.CLASS_NAME, "content").text
