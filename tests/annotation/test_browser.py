"""The REAL Label Studio in headless Chromium (Debian ``chromium`` + ``chromium-driver``, selenium):
log in through the form, open a correction task whose predicted masks were imported, and keep a
screenshot in ``test-artifacts/`` (the masks must be visible: the page is no error page and the
overlay colour of object_1 covers the predicted area)."""
from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from annotation.labelstudio import CORRECTION, import_chunk_tasks, write_frames
from tests.annotation.ls_helpers import make_chunk

pytestmark = [pytest.mark.browser, pytest.mark.labelstudio]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path):
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.skip("Debian chromium + chromium-driver are not installed "
                    "(apt-get install -y chromium chromium-driver; infra/install.sh tries)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'profile'}",
              "--no-first-run", "--disable-background-networking", "--disable-component-update",
              "--disable-sync"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(pred, timeout=90.0, step=0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(step)
    return pred()


def test_correction_task_shows_predicted_masks(labelstudio, ls_client, browser):
    from PIL import Image
    from selenium.webdriver.common.by import By

    name = f"browser{uuid.uuid4().hex[:6]}"
    project = ls_client.ensure_project(name, CORRECTION, 2)
    ls_client.ensure_local_storage(project.id, labelstudio.media_root / name)
    rng = np.random.default_rng(0)
    frames = (118 + rng.integers(0, 20, (4, 96, 128, 3))).astype(np.uint8)  # grey: no red anywhere
    urls = write_frames(frames, labelstudio.media_root, f"{name}/vid")
    chunk = make_chunk(dataset=name, n_frames=4, height=96, width=128, urls=urls)
    task_id = import_chunk_tasks(ls_client, project.id, [chunk]).created[chunk.key]

    browser.get(labelstudio.url + "/user/login/")
    browser.find_element(By.NAME, "email").send_keys(labelstudio.username)
    browser.find_element(By.NAME, "password").send_keys(labelstudio.password)
    browser.find_element(By.CSS_SELECTOR, "form button, form input[type=submit]").click()
    assert _wait(lambda: "/user/login" not in browser.current_url, 30), "login did not go through"

    browser.get(f"{labelstudio.url}/projects/{project.id}/data?task={task_id}")
    assert _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "canvas")), "no labeling canvas"
    body = _wait(lambda: (t := browser.find_element(By.TAG_NAME, "body").text)
                 and "object_1" in t and "1 of 4" in t and t)
    time.sleep(3)  # let the brush overlays finish drawing
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "labelstudio_correction_task.png"
    browser.save_screenshot(str(shot))

    assert body and "frames 0-3" in body, body[:500]  # the task's legend header
    for bad in ("Server Error", "Page not found", "Something went wrong", "Traceback"):
        assert bad not in body
    assert "Label Studio" in browser.title or "Labeling" in body or "Submit" in body
    # Label Studio's default puts its vendor's Sentry DSN into every page (the browser would report
    # errors, with their context, there); infra/labelstudio/_common.sh turns it off.
    assert "sentry.io" not in browser.page_source
    # object_1's overlay (#e6194b) is on the screen, over roughly the predicted area
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    red = (img[..., 0] > 170) & (img[..., 1] < 100) & (img[..., 2] > 40) & (img[..., 2] < 150)
    assert red.sum() > 2000, f"no mask overlay visible in {shot} ({red.sum()} reddish pixels)"
