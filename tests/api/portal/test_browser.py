"""A real headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium) signs in on the portal,
with a password and with a second factor, is sent back to its return URL, signs out and lands on the portal.
It writes screenshots of the pages to tests/artifacts/screenshots/ (gitignored) for a person to look at."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.portal.helpers import enrol_totp, next_code, portal_gateway
from tests.conftest import PASSWORD, ROOT, Upstream

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = ROOT / "tests" / "artifacts" / "screenshots"


@pytest.fixture
def driver() -> Iterator[Any]:
    """Headless Chromium through chromedriver. Missing locally: the test is skipped; missing in CI: it fails."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(path) or shutil.which(path))]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        missing.append(f"selenium ({exc})")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test needs {', '.join(missing)} in CI (.ci/run installs them)")
        pytest.skip(f"no {', '.join(missing)}: apt-get install chromium chromium-driver")
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,800"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()


def _shot(browser: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def _fill_and_submit(browser: Any, values: dict[str, str], button: str) -> None:
    """Type into the fields, press the button, and wait until the next page has replaced this one (a click
    returns before the form's navigation is done)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    for field_id, value in values.items():
        element = browser.find_element(By.ID, field_id)
        element.clear()
        element.send_keys(value)
    pressed = browser.find_element(By.ID, button)
    # The form's navigation can outrun chromedriver's bookkeeping of the click; the next page tells.
    with contextlib.suppress(WebDriverException):
        pressed.click()
    WebDriverWait(browser, 15).until(lambda _: _replaced(pressed))


def _replaced(element: Any) -> bool:
    """Whether the page holding `element` is gone (chromedriver says so in more than one way)."""
    from selenium.common.exceptions import WebDriverException

    try:
        element.is_enabled()
    except WebDriverException:
        return True
    return False


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_real_browser_signs_in_and_out(db_url: str, upstream: Upstream, tmp_path: Path, driver: Any) -> None:
    """Headless Chromium: the sign-in page (with a wrong password first: a clear message), then the right one
    lands on the return URL with the session cookie (HttpOnly); the sessions page knows the user; sign-out
    clears the cookie and shows the sign-in page. A user with TOTP goes through the code step and lands back
    too. Screenshots of each page are written."""
    async with portal_gateway(db_url, upstream, tmp_path, product_name="Acme Cloud") as gateway:
        await gateway.user("ann@example.test")
        await gateway.user("bob@example.test")
        secret, _ = await enrol_totp(gateway, "bob@example.test")
        # Every WebDriver call blocks until the page has loaded, and the gateway serves the page in this event
        # loop: the whole browser session runs in a thread.
        await asyncio.to_thread(_browse, driver, gateway.url, secret, upstream)


def _browse(driver: Any, base: str, secret: str, upstream: Upstream) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/portal/sign-in?rd=%2Fpublic%2Flanding")
    assert "Sign in" in driver.title and "Acme Cloud" in driver.title
    _shot(driver, "01-sign-in")
    _fill_and_submit(driver, {"email": "ann@example.test", "password": "wrong guess 123"}, "sign-in")
    assert "The email address or password is not right." in driver.page_source
    _shot(driver, "02-sign-in-error")
    _fill_and_submit(driver, {"email": "ann@example.test", "password": PASSWORD}, "sign-in")
    assert driver.current_url == f"{base}/public/landing"
    assert upstream.last.raw_path == "/public/landing"
    cookie = driver.get_cookie("gateway_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Lax"

    driver.get(f"{base}/portal/sessions")
    assert driver.find_element(By.ID, "signed-in-as").text == "ann@example.test"
    _shot(driver, "03-sessions")
    _fill_and_submit(driver, {}, "sign-out")
    assert driver.current_url == f"{base}/portal/sign-in?signed_out=1"
    assert "You are signed out." in driver.page_source
    assert driver.get_cookie("gateway_session") is None
    _shot(driver, "04-signed-out")

    driver.get(f"{base}/portal/sign-in?rd=%2Fpublic%2Fmfa-landing")
    _fill_and_submit(driver, {"email": "bob@example.test", "password": PASSWORD}, "sign-in")
    assert "/portal/sign-in/mfa" in driver.current_url
    _shot(driver, "05-mfa")
    _fill_and_submit(driver, {"code": next_code(secret)}, "verify")
    assert driver.current_url == f"{base}/public/mfa-landing"
    assert driver.get_cookie("gateway_session") is not None

    driver.get(f"{base}/portal/sign-out")
    _shot(driver, "06-sign-out")
    _fill_and_submit(driver, {}, "sign-out")
    assert driver.current_url == f"{base}/portal/sign-in?signed_out=1"
    assert driver.get_cookie("gateway_session") is None

    driver.get(f"{base}/portal/forgot")
    _shot(driver, "07-forgot")
    _fill_and_submit(driver, {"email": "ann@example.test"}, "send")
    assert "Check your email" in driver.page_source
    _shot(driver, "08-forgot-sent")
    driver.get(f"{base}/portal/reset?token=et_example")
    _shot(driver, "09-reset")
