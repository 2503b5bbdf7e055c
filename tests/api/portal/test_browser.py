"""A real headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium) signs in on the portal,
with a password and with a second factor, is sent back to its return URL, signs out and lands on the portal.
It writes screenshots of the pages to tests/artifacts/screenshots/ (gitignored) for a person to look at."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.api.portal.helpers import enrol_totp, next_code, portal_gateway
from tests.conftest import PASSWORD, ROOT, Upstream

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = ROOT / "tests" / "artifacts" / "screenshots"
T = TypeVar("T")


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


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Selenium blocks; the gateway serves in this event loop meanwhile."""
    return await asyncio.to_thread(fn, *args)


def _shot(browser: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def _fill_and_submit(browser: Any, values: dict[str, str], button: str) -> None:
    from selenium.webdriver.common.by import By

    for field_id, value in values.items():
        element = browser.find_element(By.ID, field_id)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, button).click()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_real_browser_signs_in_and_out(db_url: str, upstream: Upstream, tmp_path: Path, driver: Any) -> None:
    """Headless Chromium: the sign-in page (with a wrong password first: a clear message), then the right one
    lands on the return URL with the session cookie (HttpOnly); the sessions page knows the user; sign-out
    clears the cookie and shows the sign-in page. A user with TOTP goes through the code step and lands back
    too. Screenshots of each page are written."""
    from selenium.webdriver.common.by import By

    async with portal_gateway(db_url, upstream, tmp_path, product_name="Acme Cloud") as gateway:
        await gateway.user("ann@example.test")
        await gateway.user("bob@example.test")
        secret, _ = await enrol_totp(gateway, "bob@example.test")
        base = gateway.url

        await _in_thread(driver.get, f"{base}/portal/sign-in?rd=%2Fpublic%2Flanding")
        assert "Sign in" in driver.title and "Acme Cloud" in driver.title
        _shot(driver, "01-sign-in")
        await _in_thread(
            _fill_and_submit, driver, {"email": "ann@example.test", "password": "wrong guess 123"}, "sign-in"
        )
        assert "The email address or password is not right." in driver.page_source
        _shot(driver, "02-sign-in-error")
        await _in_thread(_fill_and_submit, driver, {"email": "ann@example.test", "password": PASSWORD}, "sign-in")
        assert driver.current_url == f"{base}/public/landing"
        assert upstream.last.raw_path == "/public/landing"
        cookie = driver.get_cookie("gateway_session")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Lax"

        await _in_thread(driver.get, f"{base}/portal/sessions")
        assert driver.find_element(By.ID, "signed-in-as").text == "ann@example.test"
        _shot(driver, "03-sessions")
        await _in_thread(driver.find_element(By.ID, "sign-out").click)
        assert driver.current_url == f"{base}/portal/sign-in?signed_out=1"
        assert "You are signed out." in driver.page_source
        assert driver.get_cookie("gateway_session") is None
        _shot(driver, "04-signed-out")

        await _in_thread(driver.get, f"{base}/portal/sign-in?rd=%2Fpublic%2Fmfa-landing")
        await _in_thread(_fill_and_submit, driver, {"email": "bob@example.test", "password": PASSWORD}, "sign-in")
        assert "/portal/sign-in/mfa" in driver.current_url
        _shot(driver, "05-mfa")
        await _in_thread(_fill_and_submit, driver, {"code": next_code(secret)}, "verify")
        assert driver.current_url == f"{base}/public/mfa-landing"
        assert driver.get_cookie("gateway_session") is not None

        await _in_thread(driver.get, f"{base}/portal/sign-out")
        _shot(driver, "06-sign-out")
        await _in_thread(driver.find_element(By.ID, "sign-out").click)
        assert driver.current_url == f"{base}/portal/sign-in?signed_out=1"
        assert driver.get_cookie("gateway_session") is None

        await _in_thread(driver.get, f"{base}/portal/forgot")
        _shot(driver, "07-forgot")
        await _in_thread(_fill_and_submit, driver, {"email": "ann@example.test"}, "send")
        assert "Check your email" in driver.page_source
        _shot(driver, "08-forgot-sent")
        await _in_thread(driver.get, f"{base}/portal/reset?token=et_example")
        _shot(driver, "09-reset")
