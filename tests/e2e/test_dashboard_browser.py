"""The dashboard in a real browser: headless Chromium signs in, reads the numbers and charts, keeps screenshots.

Needs the Debian packages `chromium` and `chromium-driver` and the `selenium` package (`make browser-deps`);
without them the test is skipped and says which one is missing. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import time
from pathlib import Path

import pytest

from bot.config import config_from_dict
from bot.dashboard import Sources, serve_dashboard
from bot.metrics import Metrics
from tests.dashboard_support import (
    ADAPTER_VERSION,
    SECRET,
    XSS_IMG,
    XSS_SCRIPT,
    fill,
    open_store,
    write_registry,
)
from tests.fakes import ScriptedBackend

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")


def _missing() -> str | None:
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install selenium, or `make browser-deps`)"
    if CHROMIUM is None:
        return "Chromium is not installed (apt-get install chromium chromium-driver, or `make browser-deps`)"
    if CHROMEDRIVER is None:
        return "chromedriver is not installed (apt-get install chromium-driver, or `make browser-deps`)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=f"browser test skipped: {_missing()}")


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1800",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _browse(base: str) -> dict[str, object]:
    """Everything the browser does, synchronously (run in a thread while the server serves on the loop)."""
    from selenium.webdriver.common.by import By

    ARTIFACTS.mkdir(exist_ok=True)
    seen: dict[str, object] = {}
    driver = _driver()
    try:
        driver.get(base + "/")
        assert driver.find_element(By.ID, "secret")  # the sign-in form, nothing else
        assert "requests-per-min" not in driver.page_source
        driver.find_element(By.ID, "secret").send_keys("not the secret")
        driver.find_element(By.ID, "sign-in").click()
        seen["wrong"] = _wait(driver, "login-error").text
        driver.find_element(By.ID, "secret").send_keys(SECRET)
        driver.find_element(By.ID, "sign-in").click()
        seen["requests"] = _wait(driver, "requests-per-min").text
        seen["p95"] = driver.find_element(By.ID, "latency-p95").text
        seen["serving"] = driver.find_element(By.ID, "serving").text
        seen["discord"] = driver.find_element(By.CSS_SELECTOR, '[data-platform="discord"] .pill').text
        seen["cookie_http_only"] = driver.get_cookies()[0]["httpOnly"]
        driver.save_screenshot(str(ARTIFACTS / "dashboard-status.png"))

        driver.get(base + "/models")
        row = driver.find_element(By.CSS_SELECTOR, f'tr[data-version="{ADAPTER_VERSION}"]')
        seen["adapter_replies"] = row.find_element(By.CSS_SELECTOR, ".replies").text
        seen["adapter_loss"] = row.find_element(By.CSS_SELECTOR, ".loss").text
        seen["rating_bars"] = len(
            driver.find_elements(By.CSS_SELECTOR, 'svg[data-chart="model-rating"] rect.bar')
        )
        seen["history"] = len(driver.find_elements(By.CSS_SELECTOR, "#history tr")) - 1
        driver.save_screenshot(str(ARTIFACTS / "dashboard-models.png"))

        driver.get(base + "/community?days=7")
        seen["people"] = driver.find_element(By.ID, "active-people").text
        seen["user_messages"] = driver.find_element(By.ID, "user-messages").text
        bars = driver.find_elements(By.CSS_SELECTOR, 'svg[data-chart="volume"] rect.bar')
        seen["volume_total"] = sum(float(b.get_attribute("data-value")) for b in bars)
        seen["volume_box"] = driver.find_element(By.CSS_SELECTOR, 'svg[data-chart="volume"]').size
        seen["sentiment_points"] = len(
            driver.find_elements(By.CSS_SELECTOR, 'svg[data-chart="sentiment"] circle')
        )
        seen["topics"] = [
            e.get_attribute("data-label")
            for e in driver.find_elements(By.CSS_SELECTOR, 'svg[data-chart="topics"] rect')
        ]
        seen["names"] = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#top-people td.quote")]
        seen["poll_votes"] = [
            e.get_attribute("data-value")
            for e in driver.find_elements(By.CSS_SELECTOR, 'svg[data-chart="poll-1"] rect')
        ]
        seen["turnout"] = driver.find_element(By.CSS_SELECTOR, "#stories .turnout").text
        # Had any payload run, there would be an alert open (the next command would fail) or injected elements.
        seen["injected"] = driver.execute_script(
            "return document.querySelectorAll('main script, main img').length"
        )
        seen["alert_open"] = _alert_open(driver)
        driver.save_screenshot(str(ARTIFACTS / "dashboard-community.png"))
    finally:
        driver.quit()
    return seen


def _wait(driver, element_id: str):
    """The element, once the page that has it has loaded (a click returns before the next page arrives)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 15).until(
        expected_conditions.presence_of_element_located((By.ID, element_id))
    )


def _alert_open(driver) -> bool:
    try:
        driver.switch_to.alert.text  # noqa: B018 (raises when there is none)
    except Exception:
        return False
    return True


async def test_dashboard_in_chromium(tmp_path):
    write_registry(tmp_path, time.time())
    metrics = Metrics()
    for ms in (200, 300, 400, 900):
        metrics.request_done(ms / 1000)
    metrics.platform("discord", connected=True)
    config = config_from_dict(
        {
            "bot": {"data_dir": str(tmp_path)},
            "discord": {"enabled": True},
            "dashboard": {"enabled": True, "port": 0},
        }
    )
    async with await open_store(tmp_path / "familiar.db") as store:
        expected = await fill(store)
        sources = Sources(
            config=config, store=store, character="Familiar", metrics=metrics,
            backend=ScriptedBackend(version=ADAPTER_VERSION),
        )  # fmt: skip
        async with serve_dashboard(sources, SECRET) as server:
            assert server is not None
            seen = await asyncio.to_thread(_browse, f"http://127.0.0.1:{server.port}")
    assert seen["wrong"] == "That is not the dashboard secret."
    assert seen["requests"] == "4.0" and seen["p95"] == "900 ms" and seen["serving"] == ADAPTER_VERSION
    assert seen["discord"] == "connected" and seen["cookie_http_only"] is True
    assert seen["adapter_replies"] == str(expected["adapter_replies"])
    assert seen["adapter_loss"].startswith("2.1000")
    assert seen["rating_bars"] == 2 and seen["history"] == 4
    assert seen["people"] == "5" and seen["user_messages"] == str(expected["user"])
    assert seen["volume_total"] == expected["user"] + expected["replies"]
    assert seen["volume_box"]["width"] > 500 and seen["volume_box"]["height"] > 100  # drawn, not collapsed
    assert seen["sentiment_points"] >= 2 and any("dragon" in t for t in seen["topics"])
    assert XSS_SCRIPT in seen["names"] and XSS_IMG in seen["names"]  # shown as text...
    assert seen["injected"] == 0 and seen["alert_open"] is False  # ...never run
    assert seen["poll_votes"] == ["2", "1"] and seen["turnout"] == "2"
    assert (ARTIFACTS / "dashboard-community.png").stat().st_size > 10_000
