"""A minimal W3C WebDriver client over HTTP, Python standard library only.

It drives Debian's headless Chromium (`chromium`) through Debian's
`chromium-driver` (/usr/bin/chromedriver), started here on a free port.
No Selenium, no browser downloaded by a package manager: what runs is
what the distribution ships. Only what tests/python/test_page.py needs.
"""

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM = os.environ.get("PCIPASS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PCIPASS_CHROMEDRIVER", "/usr/bin/chromedriver")
# The W3C element reference key.
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
# A hang guard, not a speed requirement.
DEFAULT_TIMEOUT = 45.0


class WebDriverError(Exception):
    def __init__(self, status, error, message):
        super().__init__(f"{status} {error}: {message}")
        self.status, self.error, self.message = status, error, message


def why_not():
    """Why a browser cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"needs {path} (Debian's chromium and chromium-driver; scripts/setup-test-deps installs them)"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=DEFAULT_TIMEOUT, interval=0.1, what="condition"):
    """Poll `predicate` until it returns something truthy and return that.
    The timeout only keeps a broken page from hanging the run."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except WebDriverError as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}"
                               + (f" (last error: {last_exc})" if last_exc else ""))
        time.sleep(interval)


class Element:
    def __init__(self, browser, element_id):
        self.browser, self.id = browser, element_id

    def _cmd(self, method, path, body=None):
        return self.browser._cmd(method, f"/element/{self.id}{path}", body)

    def click(self):
        self._cmd("POST", "/click", {})

    def send_keys(self, text):
        self._cmd("POST", "/value", {"text": text})

    def clear(self):
        self._cmd("POST", "/clear", {})

    @property
    def text(self):
        return self._cmd("GET", "/text")

    def attribute(self, name):
        return self._cmd("GET", f"/attribute/{name}")

    def property(self, name):
        return self._cmd("GET", f"/property/{name}")

    def is_displayed(self):
        return self._cmd("GET", "/displayed")

    def find(self, css):
        return Element(self.browser, self._cmd("POST", "/element", {"using": "css selector", "value": css})[ELEMENT])

    def find_all(self, css):
        found = self._cmd("POST", "/elements", {"using": "css selector", "value": css})
        return [Element(self.browser, e[ELEMENT]) for e in found]

    def __repr__(self):
        return f"<Element {self.id}>"


class Browser:
    """One chromedriver process and one headless Chromium session."""

    def __init__(self, width=1280, height=900, log_path=None, extra_args=()):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.session_id = None
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.driver = subprocess.Popen(
            [CHROMEDRIVER, f"--port={self.port}"],
            stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL,
            # Its own process group: quit() ends chromedriver and the Chromium it started.
            start_new_session=True)
        try:
            wait_until(self._driver_ready, timeout=30, what="chromedriver to listen")
            caps = {"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "pageLoadStrategy": "normal",
                # The console, for CSP refusals and script errors.
                "goog:loggingPrefs": {"browser": "ALL"},
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", f"--window-size={width},{height}",
                             "--no-first-run", "--no-default-browser-check", *extra_args],
                },
            }}}
            value = self._request("POST", "/session", caps, timeout=90)
            self.session_id = value["sessionId"]
        except BaseException:
            self.quit()
            raise

    def _driver_ready(self):
        if self.driver.poll() is not None:
            raise RuntimeError(f"chromedriver exited with {self.driver.returncode}")
        try:
            return self._request("GET", "/status", timeout=2).get("ready", False)
        except (OSError, urllib.error.URLError):
            return False

    def _request(self, method, path, body=None, timeout=60):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json; charset=utf-8"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                payload = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                value = json.loads(exc.read()).get("value", {})
            except ValueError:
                value = {}
            raise WebDriverError(exc.code, value.get("error", "?"), value.get("message", "")) from None
        return payload.get("value")

    def _cmd(self, method, path, body=None):
        return self._request(method, f"/session/{self.session_id}{path}", body)

    # Navigation and the page
    def get(self, url):
        self._cmd("POST", "/url", {"url": url})

    @property
    def url(self):
        return self._cmd("GET", "/url")

    @property
    def title(self):
        return self._cmd("GET", "/title")

    def refresh(self):
        self._cmd("POST", "/refresh", {})

    def execute_script(self, script, *args):
        return self._cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    # Elements
    def find(self, css):
        return Element(self, self._cmd("POST", "/element", {"using": "css selector", "value": css})[ELEMENT])

    def find_all(self, css):
        found = self._cmd("POST", "/elements", {"using": "css selector", "value": css})
        return [Element(self, e[ELEMENT]) for e in found]

    def active_element(self):
        return Element(self, self._cmd("GET", "/element/active")[ELEMENT])

    def wait_for(self, css, timeout=DEFAULT_TIMEOUT, displayed=True):
        """The first element matching `css` (displayed, unless told not)."""
        def found():
            for el in self.find_all(css):
                if not displayed or el.is_displayed():
                    return el
            return None
        return wait_until(found, timeout=timeout, what=f"{css!r}")

    def wait_gone(self, css, timeout=DEFAULT_TIMEOUT):
        """Wait until no displayed element matches `css`."""
        wait_until(lambda: not any(el.is_displayed() for el in self.find_all(css)),
                   timeout=timeout, what=f"{css!r} to disappear")

    def send_keys_active(self, text):
        """Type into whatever has the focus (keys such as Escape: '\\ue00c')."""
        self._cmd("POST", "/actions", {"actions": [{
            "type": "key", "id": "keyboard",
            "actions": [a for ch in text for a in ({"type": "keyDown", "value": ch}, {"type": "keyUp", "value": ch})],
        }]})
        self._cmd("DELETE", "/actions")

    # Window and screenshots
    def set_window_size(self, width, height):
        self._cmd("POST", "/window/rect", {"width": width, "height": height})

    def screenshot(self, path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._cmd("GET", "/screenshot")))
        return path

    def browser_log(self):
        """The console messages since the last call (chromedriver's log
        extension): dicts with level, message, timestamp."""
        try:
            return self._cmd("POST", "/se/log", {"type": "browser"})
        except WebDriverError:
            return []

    def cookies(self):
        return self._cmd("GET", "/cookie")

    def delete_cookies(self):
        self._cmd("DELETE", "/cookie")

    def quit(self):
        try:
            if self.session_id:
                self._request("DELETE", f"/session/{self.session_id}", timeout=30)
        except (OSError, WebDriverError, urllib.error.URLError):
            pass
        finally:
            self.session_id = None
            if self.driver.poll() is None:
                self.driver.terminate()
                try:
                    self.driver.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.driver.kill()
                    self.driver.wait()
            # Whatever the driver left behind in its group (a Chromium whose
            # session could not be deleted).
            try:
                os.killpg(self.driver.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if self._log not in (None, subprocess.DEVNULL):
                self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.quit()


KEY_ESCAPE = "\ue00c"
KEY_ENTER = "\ue007"
KEY_TAB = "\ue004"

__all__ = ["Browser", "Element", "WebDriverError", "wait_until", "why_not", "KEY_ESCAPE", "KEY_ENTER", "KEY_TAB"]
