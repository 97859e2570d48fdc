"""The draw-a-digit page at /ui, driven in headless Chromium against the real server.

Draws digits with pointer events, uploads MNIST and broken files, and checks what a user sees.
Needs Debian's chromium and chromium-driver (scripts/system-deps.sh); skipped without them,
except in CI, where their absence fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver import ActionChains
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.actions import interaction
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.actions.pointer_input import PointerInput
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from service.inference import Classifier, ModelSource, prediction
from service.preprocess import preprocess_image_bytes
from tests.requirements import unavailable
from tests.support import REPO
from tests.support.images import png_bytes

# usefixtures run before the test's own arguments, so the check precedes `server`.
pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.usefixtures("chromium_installed")]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,900",
)
SCREENSHOT = REPO / "test-artifacts" / "ui.png"
WAIT_S = 20  # generous: the test machine is small and shared
NO_DIGIT = "\u2013"  # the en dash the page shows while it has no answer

# Strokes as polylines in fractions of the pad (0..1 from its top-left corner), shaped like
# MNIST digits: about two thirds of the pad high, centred.
ONE = [[(0.53, 0.17), (0.47, 0.83)]]
SEVEN = [[(0.28, 0.22), (0.72, 0.22), (0.60, 0.45), (0.46, 0.83)]]

COUNT_LIT_PIXELS = """
const canvas = document.getElementById(arguments[0]);
const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let lit = 0;
for (let i = 0; i < data.length; i += 4) if (data[i] > 0) lit++;
return lit;
"""


@pytest.fixture(scope="session")
def chromium_installed() -> None:
    """Skip (fail in CI) without Chromium, before the session trains a model and starts a server."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        unavailable(f"{' and '.join(missing)} not installed (run scripts/system-deps.sh)")


@pytest.fixture
def browser(chromium_installed, tmp_path) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile; leaves a screenshot in test-artifacts/."""
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        SCREENSHOT.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
        driver.quit()


def draw(driver: WebDriver, strokes: list[list[tuple[float, float]]], step_px: int = 6) -> None:
    """Draw each polyline as one press-move-release of a mouse, in small steps."""
    pad = driver.find_element(By.ID, "pad")
    width, height = pad.size["width"], pad.size["height"]

    def offset(x: float, y: float) -> tuple[int, int]:  # W3C offsets count from the centre
        return round((x - 0.5) * width), round((y - 0.5) * height)

    mouse = PointerInput(interaction.POINTER_MOUSE, "mouse")
    actions = ActionBuilder(driver, mouse=mouse, duration=10)  # ms per small move
    pointer = actions.pointer_action
    for stroke in strokes:
        pointer.move_to(pad, *offset(*stroke[0]))
        pointer.pointer_down()
        for (x0, y0), (x1, y1) in pairwise(stroke):
            steps = max(1, round(max(abs(x1 - x0) * width, abs(y1 - y0) * height) / step_px))
            for i in range(1, steps + 1):
                t = i / steps
                pointer.move_to(pad, *offset(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t))
        pointer.pointer_up()
    actions.perform()


def expect_digit(driver: WebDriver, expected: str) -> None:
    """Wait until the newest request is answered and the page shows `expected`."""

    def settled(d: WebDriver) -> bool:
        idle = d.find_element(By.TAG_NAME, "body").get_attribute("data-busy") == "false"
        return idle and d.find_element(By.ID, "digit").text == expected

    try:
        WebDriverWait(driver, WAIT_S).until(settled)
    except TimeoutException:
        shown = driver.find_element(By.ID, "digit").text
        pytest.fail(f"expected {expected!r}, the page shows {shown!r} ({message(driver)!r})")


def upload(driver: WebDriver, path: Path) -> None:
    driver.find_element(By.ID, "file-input").send_keys(str(path))


def message(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "message").text


def test_draw_upload_and_recover_from_errors(browser, server, mnist_test_pngs, tmp_path):
    browser.get(f"{server.url}/ui/")
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-model") == "ready"
    )
    assert "% test accuracy" in browser.find_element(By.ID, "model-accuracy").text
    assert browser.find_element(By.ID, "model-version").text not in ("", "loading…")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#bars [role=meter]")) == 10

    draw(browser, ONE)
    expect_digit(browser, "1")
    assert browser.execute_script(COUNT_LIT_PIXELS, "model-input") > 20
    top_bar = browser.find_element(By.CSS_SELECTOR, "#bars .bar.top")
    assert top_bar.get_attribute("aria-label") == "Digit 1"
    assert top_bar.get_attribute("aria-valuetext").endswith("%")

    browser.find_element(By.ID, "clear").click()
    assert browser.find_element(By.ID, "digit").text == NO_DIGIT
    assert browser.execute_script(COUNT_LIT_PIXELS, "pad") == 0
    assert browser.execute_script(COUNT_LIT_PIXELS, "model-input") == 0

    draw(browser, SEVEN)
    expect_digit(browser, "7")
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()  # the keyboard way to clear
    assert browser.find_element(By.ID, "digit").text == NO_DIGIT
    assert browser.execute_script(COUNT_LIT_PIXELS, "pad") == 0

    k, (png, expected) = next((k, t) for k, t in enumerate(mnist_test_pngs) if t[1] not in (1, 7))
    mnist_png = tmp_path / f"mnist-test-{k}.png"
    mnist_png.write_bytes(png)
    upload(browser, mnist_png)
    expect_digit(browser, str(expected))
    assert browser.find_element(By.ID, "upload-preview").is_displayed()
    assert browser.find_element(By.ID, "upload-name").text == mnist_png.name

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"definitely not a PNG " + os.urandom(256))
    upload(browser, broken)
    expect_digit(browser, NO_DIGIT)
    assert message(browser).startswith("The server could not read this image: ")
    assert "supported image" in message(browser)

    draw(browser, ONE)  # the page keeps working after an error, and the error goes away
    expect_digit(browser, "1")
    assert message(browser) == ""

    errors = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "status of 400" not in entry["message"]
    ]
    assert errors == []


def test_the_page_says_when_the_input_is_not_a_digit(
    browser, calibrated_server, calibrated_checkpoint, mnist_test_pngs, tmp_path
):
    """Noise the model flags is shown as "not sure", a digit it is sure of as a plain answer."""
    classifier = Classifier(ModelSource(calibrated_checkpoint, None))

    def flagged(png: bytes) -> bool:
        row = classifier.outputs(preprocess_image_bytes(png).reshape(1, 784))[0]
        return bool(prediction(row)["uncertain"])

    rng = np.random.default_rng(0)
    noises = (
        png_bytes(np.pad(rng.integers(0, 256, (40, 40), dtype=np.uint8), 12)) for _ in range(50)
    )
    path = tmp_path / "noise.png"
    path.write_bytes(next(png for png in noises if flagged(png)))
    digit = tmp_path / "digit.png"
    digit.write_bytes(next(png for png, _ in mnist_test_pngs if not flagged(png)))
    browser.get(f"{calibrated_server.url}/ui/")
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-model") == "ready"
    )
    upload(browser, path)
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_element(By.ID, "confidence").text.startswith("Not sure this is a digit")
    )
    assert "uncertain" in browser.find_element(By.ID, "digit").get_attribute("class")

    upload(browser, digit)
    WebDriverWait(browser, WAIT_S).until(
        lambda d: (
            d.find_element(By.ID, "confidence").text.endswith("% confident")
            and not d.find_element(By.ID, "confidence").text.startswith("Not sure")
        )
    )
    assert "uncertain" not in browser.find_element(By.ID, "digit").get_attribute("class")
