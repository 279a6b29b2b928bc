"""The Dagster UI renders the asset graph: headless Chromium finds every contract key."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from ml_platform.home import child_env, prepare_home
from ml_platform.serving.cluster import free_port
from ml_platform.settings import REPO_ROOT, load_settings

from .test_definitions import CONTRACT_UPSTREAMS


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
