"""The moderator console in a real headless Chromium (Debian's chromium + chromedriver, driven by
Selenium): a moderator created with `tsgate accounts create --role moderator` signs in, finds two
spam comments the gateway held in front of the demo backend, approves one with the keyboard
shortcut and removes the other with its button; the approved comment then exists on the backend
(authored by its poster), the removed one does not, and both decisions are in the audit log.
Screenshots are kept in the test's tmp dir and their paths printed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Backend, GatewayProc, policy_text, request
from tests.review.helpers import (
    PASSWORD,
    ROUTES,
    SPAM,
    SPAM_2,
    Receiver,
    backend_token,
    comment,
    create_account,
    new_post,
    receiver,
    start,
)

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the lead adds the dependency
    webdriver = None  # type: ignore[assignment]

pytestmark = pytest.mark.skipif(
    webdriver is None or CHROMIUM is None or CHROMEDRIVER is None,
    reason="BROWSER TEST SKIPPED: needs the Python package 'selenium' and Debian's chromium + chromium-driver "
           "(apt-get install -y chromium chromium-driver)")


@pytest.fixture
def hook() -> Iterator[Receiver]:
    yield from receiver()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def test_a_moderator_approves_and_removes_held_spam_in_the_browser(
        backend: Backend, start_gateway: Callable[..., GatewayProc], tmp_path: Path, hook: Receiver,
        browser: WebDriver) -> None:
    """Sign in, approve one held comment (keyboard), remove another (button); see the backend and the audit."""
    gw = start(start_gateway, policy_text(backend.port, ROUTES.format(db=tmp_path / "review.db", webhook=hook.url)))
    create_account(gw, "mia", role="moderator")
    post_id = new_post(gw, "alice")
    author = {"Authorization": f"Token {backend_token('alice')}"}
    held = {}
    for text in (SPAM, SPAM_2):
        response = comment(gw, post_id, text, author)
        assert response.status == 202, response.body
        held[text] = response.json()["decision_id"]

    shots: list[Path] = []
    wait = WebDriverWait(browser, 10)

    # Kept as artifacts of the run (tests/artifacts/ is git-ignored; TSGATE_TEST_ARTIFACTS moves it).
    artifacts = Path(os.environ.get("TSGATE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))
    artifacts = artifacts / "review-console"
    artifacts.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> None:
        path = artifacts / f"{len(shots) + 1:02d}-{name}.png"
        assert browser.save_screenshot(str(path))
        shots.append(path)

    base = f"http://127.0.0.1:{gw.admin_port}/console"
    browser.get(base + "/")  # not signed in: sent to the sign-in page
    wait.until(expected_conditions.presence_of_element_located((By.ID, "username")))
    browser.find_element(By.ID, "username").send_keys("mia")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    shot("sign-in")
    browser.find_element(By.ID, "sign-in").click()
    wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "moderator-name"), "mia"))
    shot("queue")

    def open_item(decision_id: str) -> None:
        browser.get(base + "/?kind=content&state=open")
        row = wait.until(expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, f'tr[data-decision-id="{decision_id}"] a')))
        row.click()
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "decision-id"), decision_id))

    open_item(held[SPAM])
    assert SPAM in browser.find_element(By.CSS_SELECTOR, ".content-text").text
    assert "model.spam" in browser.find_element(By.CSS_SELECTOR, "table.symbols").text
    shot("item-to-approve")
    browser.find_element(By.TAG_NAME, "body").send_keys("a")  # the keyboard shortcut for Approve
    wait.until(expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"), "Decided: approve"))
    assert "forwarded to the backend: HTTP 201" in browser.find_element(By.CSS_SELECTOR, ".flash").text
    shot("approved")

    open_item(held[SPAM_2])
    browser.find_element(By.ID, "decide-remove").click()
    wait.until(expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"), "Decided: remove"))
    shot("removed")

    comments = request(backend.port, "GET", f"/api/posts/{post_id}/comments", headers={"X-Tsgate-User": "viewer"})
    assert [(c["author"], c["body"]) for c in comments.json()["items"]] == [("alice", SPAM)]
    assert hook.wait(1)[0]["event"] == "remove"

    browser.find_element(By.LINK_TEXT, "Audit log").click()
    audit = wait.until(expected_conditions.presence_of_element_located((By.ID, "audit"))).text
    assert "decide:approve" in audit and "decide:remove" in audit and "mia" in audit
    shot("audit")
    for path in shots:
        print(f"screenshot: {path}")
