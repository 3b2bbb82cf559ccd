"""The web page in a real browser: Debian's chromium and chromedriver, driven by selenium.

Skipped where the browser, its driver or selenium is missing (CI installs them with apt).
Each test writes a screenshot to $SPEAKERGENDER_TEST_OUTPUTS (default: test-outputs/ in the
repository); with SPEAKERGENDER_WRITE_DOCS_SCREENSHOT=1 the recording test also writes the
README's docs/images/web_app.png.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import helpers
import wavfiles
from speakergender import rest_api, serve, serving, synthetic
from test_serve import running_server

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
WAIT_SECONDS = 60


def find_browser() -> tuple[str, str]:
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver") or (
        "/usr/lib/chromium/chromedriver" if Path("/usr/lib/chromium/chromedriver").is_file()
        else None)
    if not browser or not driver:
        pytest.skip("browser tests need chromium and chromedriver (Debian: apt-get install "
                    "chromium chromium-driver); not found on PATH")
    return browser, driver


def outputs_dir() -> Path:
    folder = Path(os.environ.get("SPEAKERGENDER_TEST_OUTPUTS", "test-outputs"))
    folder = folder if folder.is_absolute() else helpers.REPO_ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start_browser(*arguments: str, width: int = 1000, height: int = 1100):
    browser, driver_path = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
                     f"--window-size={width},{height}", *arguments):
        options.add_argument(argument)
    try:
        return webdriver.Chrome(options=options,
                                service=webdriver.ChromeService(executable_path=driver_path))
    except WebDriverException as error:
        pytest.skip(f"chromium did not start: {error.msg}")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> serving.LoadedModel:
    if os.environ.get("SPEAKERGENDER_WRITE_DOCS_SCREENSHOT") == "1":
        # The README's screenshot shows a model that tells the synthetic voices apart.
        return serving.load_model(helpers.exported_model(tmp_path_factory))
    return serving.load_model(helpers.untrained_exported_model(tmp_path_factory))


@pytest.fixture(scope="module")
def page_url(model):
    app = rest_api.create_app(model, serve.ServerOptions())
    with running_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def voice_wav(tmp_path_factory) -> Path:
    """2 s of a synthetic female voice, 16-bit PCM at 48 kHz (what Chromium's fake capture
    device plays in a loop)."""
    rng = np.random.default_rng(5)
    samples = synthetic.utterance(synthetic.speaker_voice("female", rng), 2.0, 48000, rng)
    return wavfiles.write_wav(tmp_path_factory.mktemp("browser") / "voice.wav", samples, 48000)


def wait_for_result(driver, count: int = 1):
    """The page's results once `count` of them have finished (scored or failed)."""
    def finished(d):
        items = d.find_elements(By.CSS_SELECTOR, "#results li.result")
        done = [i for i in items if i.get_attribute("data-state") in ("done", "error")]
        return done if len(done) >= count else False

    return WebDriverWait(driver, WAIT_SECONDS).until(finished)


def wait_until_ready(driver, url: str) -> None:
    driver.get(url)
    WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")


def test_upload_shows_label_probability_and_timeline(page_url, model, voice_wav):
    driver = start_browser(width=390, height=900)  # a phone's width
    try:
        wait_until_ready(driver, page_url)
        driver.find_element(By.ID, "file-input").send_keys(str(voice_wav))
        (result,) = wait_for_result(driver)
        assert result.get_attribute("data-state") == "done", result.text
        assert result.find_element(By.TAG_NAME, "h3").text == "voice.wav"
        assert result.find_element(By.CSS_SELECTOR, ".label").text in ("female", "male")
        outputs = model.classify_wav(wav_bytes=tf.constant([voice_wav.read_bytes()]))
        probability = float(outputs["female_probability"][0])
        assert result.find_element(By.CSS_SELECTOR, ".probability").text == \
            f"probability female {probability:.3f} (calibrated)"
        assert result.find_element(By.CSS_SELECTOR, ".duration").text == "2.00 s"
        windows = int(outputs["window_count"][0])
        assert len(result.find_elements(By.CSS_SELECTOR, ".timeline rect.bar")) == windows
        scored = int(np.sum(outputs["window_sounding"][0, :windows]))
        assert len(result.find_elements(By.CSS_SELECTOR, ".timeline rect.bar.scored")) == scored
        label = outputs["label"][0].numpy().decode()
        assert result.find_element(By.CSS_SELECTOR, ".label").text == label
        assert f"{windows} windows, {scored} scored" in result.find_element(
            By.CSS_SELECTOR, ".timeline svg").get_attribute("aria-label")
        # Readable on a phone: nothing wider than the screen.
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth")
        assert driver.find_elements(By.CSS_SELECTOR, "#card-limits li")
        # Keyboard: Tab from the file input reaches the Record button.
        driver.execute_script("document.getElementById('file-input').focus()")
        ActionChains(driver).send_keys(Keys.TAB).perform()
        assert driver.switch_to.active_element.get_attribute("id") == "record-button"
        driver.save_screenshot(str(outputs_dir() / "web_app_upload.png"))
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def other_files(tmp_path_factory) -> dict[str, Path]:
    """A male voice, a female-then-male recording, silence and a broken file."""
    folder = tmp_path_factory.mktemp("browser-files")
    rng = np.random.default_rng(6)
    male = synthetic.utterance(synthetic.speaker_voice("male", rng), 2.0, 16000, rng)
    female = synthetic.utterance(synthetic.speaker_voice("female", rng), 2.0, 16000, rng)
    broken = folder / "broken.wav"
    broken.write_bytes(helpers.CORRUPT_WAV)
    return {"male.wav": wavfiles.write_wav(folder / "male.wav", male, 16000),
            "two speakers.wav": wavfiles.write_wav(folder / "two speakers.wav",
                                                   np.concatenate([female, male]), 16000),
            "silence.wav": wavfiles.write_wav(folder / "silence.wav", np.zeros(16000), 16000),
            "broken.wav": broken}


def test_record_from_microphone(page_url, model, voice_wav, other_files):
    driver = start_browser("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                           f"--use-file-for-fake-audio-capture={voice_wav}", height=2200)
    try:
        wait_until_ready(driver, page_url)
        button = driver.find_element(By.ID, "record-button")
        assert button.tag_name == "button" and button.text == "Record"
        button.click()
        WebDriverWait(driver, WAIT_SECONDS).until(
            lambda d: d.find_element(By.ID, "record-button").get_attribute("aria-pressed")
            == "true")
        time.sleep(1.5)
        button.click()
        (result,) = wait_for_result(driver)
        title = result.find_element(By.TAG_NAME, "h3").text
        assert title.startswith("Recording 1 (")
        assert result.get_attribute("data-state") == "done", result.text
        assert result.find_element(By.CSS_SELECTOR, ".label").text in ("female", "male")
        seconds = float(result.find_element(By.CSS_SELECTOR, ".duration").text.split()[0])
        assert 1.0 <= seconds <= 3.0, seconds
        assert result.find_elements(By.CSS_SELECTOR, ".timeline rect.bar.scored")
        driver.save_screenshot(str(outputs_dir() / "web_app_record.png"))

        # Files beside it: each state the page shows.
        driver.find_element(By.ID, "file-input").send_keys(
            "\n".join(str(path) for path in other_files.values()))
        results = {item.find_element(By.TAG_NAME, "h3").text: item
                   for item in wait_for_result(driver, 1 + len(other_files))}
        outputs = model.classify_wav(wav_bytes=tf.constant(
            [path.read_bytes() for path in other_files.values()]))
        for row, name in enumerate(other_files):
            item, error = results[name], outputs["error"][row].numpy().decode()
            if error:
                assert item.get_attribute("data-state") == "error"
                assert item.find_element(By.CSS_SELECTOR, ".error").text == \
                    f"Could not score it: {error}"
                continue
            label = outputs["label"][row].numpy().decode()
            assert item.find_element(By.CSS_SELECTOR, ".label").text == label
            notes = " ".join(note.text for note in item.find_elements(By.CSS_SELECTOR, ".note"))
            assert ("No speech" in notes) == (label == "no speech")
            assert ("Windows disagree" in notes) == bool(outputs["windows_disagree"][row])
        assert results["silence.wav"].find_element(By.CSS_SELECTOR, ".label").text == "no speech"
        assert results["broken.wav"].get_attribute("data-state") == "error"
        driver.save_screenshot(str(outputs_dir() / "web_app_files.png"))
        if os.environ.get("SPEAKERGENDER_WRITE_DOCS_SCREENSHOT") == "1":
            docs = helpers.REPO_ROOT / "docs" / "images" / "web_app.png"
            docs.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(docs))
    finally:
        driver.quit()
