"""The Dagster UI in headless Chromium: the asset graph shows every contract key, and a bad file
shows its failed checks, the quarantine counts and the offending rows as they arrived."""

import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import ElementClickInterceptedException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from ml_platform.definitions import build_definitions
from ml_platform.home import child_env, prepare_home
from ml_platform.serving.cluster import free_port
from ml_platform.settings import REPO_ROOT, load_settings
from ml_platform.usecases.sensor_anomaly.generate import SensorDataConfig, generate_day

from .conftest import USE_CASE, keys
from .listening import listeners, process_tree
from .test_definitions import CONTRACT_UPSTREAMS

pytestmark = pytest.mark.integration  # the Dagster webserver in headless Chromium


@pytest.fixture
def webserver(tmp_path):
    os.environ["ML_PLATFORM_HOME"] = str(tmp_path / "home")
    settings = load_settings()
    prepare_home(settings)
    port = free_port()
    log = (tmp_path / "webserver.log").open("wb")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster-webserver")),
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=child_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        process.terminate()
        pytest.fail(f"webserver did not start: {(tmp_path / 'webserver.log').read_text()[-2000:]}")
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=3200,1400",
        f"--user-data-dir={tmp_path / 'chrome'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    yield driver
    driver.quit()


def test_asset_graph_shows_every_contract_key(webserver, browser, tmp_path):
    browser.get(f"{webserver}/locations/ml_platform.definitions/asset-groups/sensor_anomaly")
    names = list(CONTRACT_UPSTREAMS)

    def rendered(driver) -> set[str]:
        return {
            name for name in names if driver.find_elements(By.XPATH, f"//*[normalize-space(text())='{name}']")
        }

    try:
        # Wide enough that the graph is drawn at a zoom where node labels are not shortened.
        WebDriverWait(browser, 120, poll_frequency=1).until(lambda d: rendered(d) == set(names))
        # A first visit greets with a newsletter dialog; dismiss it so the screenshot shows the graph.
        for button in browser.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
            button.click()
    finally:
        browser.save_screenshot(str(tmp_path / "asset_graph.png"))
    assert (tmp_path / "asset_graph.png").stat().st_size > 10_000
    # The webserver, the code server it started and the browser's driver listen on loopback only.
    found = listeners(process_tree(os.getpid()))
    assert any(x.port == int(webserver.rsplit(":", 1)[1]) for x in found)
    assert [str(x) for x in found if not x.loopback] == []


def _text_appears(browser, text: str, timeout: float = 120) -> str:
    """The page's text once it contains ``text`` (pages load their data after rendering)."""
    WebDriverWait(browser, timeout, poll_frequency=1).until(
        lambda d: text in d.find_element(By.TAG_NAME, "body").text
    )
    return browser.find_element(By.TAG_NAME, "body").text


def _click(browser, xpath: str, timeout: float = 60) -> None:
    """Click ``xpath``, first dismissing the newsletter dialog a first visit shows over the page."""
    deadline = time.monotonic() + timeout
    while True:
        for button in browser.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
            with contextlib.suppress(WebDriverException):  # still fading in: the next round clicks it
                button.click()
        try:
            browser.find_element(By.XPATH, xpath).click()
            return
        except ElementClickInterceptedException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_a_bad_file_shows_its_failed_checks_counts_and_rows(webserver, browser, tmp_path):
    settings = load_settings()  # the webserver's home
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)
    frame = generate_day(day, SensorDataConfig(sensors=3))[0].astype(str)
    frame.loc[[3, 7], "value"] = "twelve"
    frame.loc[9, "value"] = "5000"
    landing = settings.landing_dir_for(USE_CASE)
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / f"bad_{day}.csv"
    frame.to_csv(path, index=False)
    defs = build_definitions(settings)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        result = dg.materialize(
            defs.assets,
            selection=keys("raw_readings", "readings_quarantine"),
            instance=instance,
            resources=defs.resources,
            partition_key=day.isoformat(),
        )
    assert result.success

    try:
        browser.get(f"{webserver}/assets/{USE_CASE}/raw_readings?view=checks&checkDetail=types")
        page = _text_appears(browser, "violations")
        assert "types\nFailed" in page and "value_range\nFailed" in page and "violations 2" in page
        show_sample = "//*[normalize-space(text())='sample']/ancestor::tr[1]//*[text()='[Show Markdown]']"
        _click(browser, show_sample)
        dialog = _text_appears(browser, "twelve")
        assert "type:value" in dialog and path.name in dialog
        browser.save_screenshot(str(tmp_path / "types_check_sample.png"))

        browser.get(f"{webserver}/assets/{USE_CASE}/readings_quarantine")
        page = _text_appears(browser, "by_reason")
        assert "Row count\n3" in page and "type:value 2" in page and "range:value 1" in page
    finally:
        browser.save_screenshot(str(tmp_path / "last_page.png"))
