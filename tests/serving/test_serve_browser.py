"""The playground page in a real browser (headless Chromium driven by selenium): it draws images,
answers a question about an uploaded image with the same answer the API gives, and is screenshotted.

Needs Debian's `chromium` and `chromium-driver` (skipped, with that reason, where they are absent)."""

import base64
import os
import shutil
import time

import numpy as np
import pytest
import requests
from PIL import Image

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="needs headless Chromium: apt-get install chromium chromium-driver")
# Set to a path to keep a copy of the screenshot (docs/results/playground.png was made this way).
SCREENSHOT_COPY = os.environ.get("SYNERGEN_PLAYGROUND_SCREENSHOT")


def _browser(tmp_path):
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service

  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
               "--window-size=1200,760"):
    options.add_argument(flag)
  return webdriver.Chrome(service=Service(DRIVER), options=options)


def _wait(condition, timeout=60.0):
  deadline = time.time() + timeout
  while not condition():
    assert time.time() < deadline, "the page did not get there in time"
    time.sleep(0.1)


def test_the_playground_draws_and_answers_in_a_browser(served, tmp_path):
  from selenium.webdriver.common.by import By

  digit = np.zeros((28, 28, 3), np.uint8)
  digit[5:23, 11:17] = 255
  upload = tmp_path / "digit.png"
  Image.fromarray(digit).save(upload)
  question = "What digit is this?"
  # What the API answers for the request the page makes (temperature 1: the tiny model's greedy
  # answer is empty; the page's seed 0; the same file's bytes).
  want = requests.post(served.url + "/v1/chat/completions", headers=served.headers(), timeout=60, json={
      "model": served.model, "temperature": 1, "seed": 0, "messages": [{"role": "user", "content": [
          {"type": "image_url", "image_url": {
              "url": "data:image/png;base64," + base64.b64encode(upload.read_bytes()).decode()}},
          {"type": "text", "text": question}]}]}).json()["choices"][0]["message"]["content"]

  driver = _browser(tmp_path)
  try:
    # The browser sends the key as HTTP Basic credentials, as it would after asking the user once.
    driver.execute_cdp_cmd("Network.enable", {})
    basic = base64.b64encode(f"user:{served.key}".encode()).decode()
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {basic}"}})
    driver.get(served.url + "/")
    _wait(lambda: served.model in driver.find_element(By.ID, "model").text)

    prompt = driver.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("seven")
    driver.find_element(By.ID, "generate").click()
    _wait(lambda: "image(s) in" in driver.find_element(By.ID, "gen-latency").text)
    images = driver.find_elements(By.CSS_SELECTOR, "#gen-images img")
    size = requests.get(served.url + "/v1/models", headers=served.headers(), timeout=10).json()[
        "data"][0]["image_size"]
    assert len(images) == 4
    assert all(driver.execute_script("return arguments[0].naturalWidth", im) == size for im in images)

    driver.find_element(By.ID, "file").send_keys(str(upload))
    _wait(lambda: driver.find_element(By.ID, "preview").get_attribute("src").startswith("data:image"))
    driver.find_element(By.ID, "question").send_keys(question)
    temperature = driver.find_element(By.ID, "temperature")
    temperature.clear()
    temperature.send_keys("1")
    driver.find_element(By.ID, "ask").click()
    answer = driver.find_element(By.ID, "answer")
    _wait(lambda: answer.get_attribute("data-done") == "1")
    assert "error" not in (answer.get_attribute("class") or "")
    assert want.strip() and answer.get_attribute("textContent") == want     # streamed, the same text
    assert "answered in" in driver.find_element(By.ID, "ask-latency").text
    shot = tmp_path / "playground.png"
    driver.save_screenshot(str(shot))
    assert Image.open(shot).size[0] > 600
    if SCREENSHOT_COPY:
      shutil.copy(shot, SCREENSHOT_COPY)
  finally:
    driver.quit()
