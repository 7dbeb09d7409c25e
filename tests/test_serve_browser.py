"""The page of ``vistrain serve`` driven in headless Chromium over the DevTools protocol.

A real ``vistrain serve`` subprocess, a real browser: open ``/``, give the file input an image
(``DOM.setFileInputFiles``, as a user choosing a file), wait until the page shows the top-1 class
and the Grad-CAM overlay, and compare with what the API answers for the same image.  The page must
make no request anywhere but its own server and log no error.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from test_serve import Server, png_bytes, run_dir  # noqa: F401  (run_dir: the shared fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="chromium not installed (apt-get install -y chromium); required in CI")


class Browser:
    """Headless Chromium with one page, driven by DevTools protocol commands over a websocket."""

    def __init__(self, profile: Path):
        import websocket  # websocket-client, a test dependency
        (profile / "DevToolsActivePort").unlink(missing_ok=True)  # a stale one names a dead port
        self.ws = None
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-extensions", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            port = self._devtools_port(profile / "DevToolsActivePort")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                page = next(t for t in json.load(r) if t["type"] == "page")
            self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30,
                                                  suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self.next_id, self.events = 0, []

    def _devtools_port(self, path: Path, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.is_file() and path.read_text().strip():
                return int(path.read_text().split()[0])
            assert self.proc.poll() is None, self.proc.stderr.read()[-2000:]
            time.sleep(0.1)
        raise AssertionError("chromium wrote no DevToolsActivePort")

    def send(self, method: str, **params) -> dict:
        """One command; the events that arrive before its answer are kept in ``events``."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, (method, msg["error"])
                return msg.get("result", {})
            self.events.append(msg)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        status = self.evaluate("document.getElementById('status').textContent")
        raise AssertionError(f"timed out waiting for {expression}; page status: {status!r}")

    def close(self) -> None:
        """Stop the browser and its renderer processes (its own process group)."""
        if self.ws is not None:
            self.ws.close()
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 20)):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


def open_page(browser: Browser, url: str) -> int:
    """Navigate to the served page and wait for it; the node id of its file input."""
    for domain in ("Page", "Runtime", "Network", "Log", "DOM"):
        browser.send(f"{domain}.enable")
    browser.send("Page.navigate", url=f"{url}/")
    browser.wait_for("document.readyState === 'complete' && !!document.getElementById('file')")
    browser.wait_for("document.getElementById('model').textContent.includes('classes')")
    root = browser.send("DOM.getDocument")["root"]["nodeId"]
    return browser.send("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]


def settled_state(browser: Browser) -> str:
    return browser.wait_for("['done', 'error'].includes(document.body.dataset.state) && "
                            "document.body.dataset.state")


SHOWN = ("[document.getElementById('top1').textContent, document.getElementById('top1').dataset.probability,"
         " document.querySelectorAll('#bars .row').length, document.getElementById('results').hidden]")


@pytest.mark.slow
def test_an_error_clears_the_previous_result(run_dir, tmp_path):  # noqa: F811
    assert CHROMIUM is not None, "chromium is required in CI to check the served page works"
    good, bad = tmp_path / "good.png", tmp_path / "notes.png"
    good.write_bytes(png_bytes(1))
    bad.write_bytes(b"just some text, not an image")
    server, browser = Server(run_dir), None
    try:
        browser = Browser(tmp_path / "profile")
        node = open_page(browser, server.url)
        browser.send("DOM.setFileInputFiles", files=[str(good)], nodeId=node)
        assert settled_state(browser) == "done"
        assert browser.evaluate(SHOWN)[2] == 3
        browser.send("DOM.setFileInputFiles", files=[str(bad)], nodeId=node)
        browser.wait_for("document.body.dataset.state === 'error'")
        assert browser.evaluate(SHOWN) == ["", "", 0, True]  # no bars of the previous image
        status = browser.evaluate("document.getElementById('status').textContent")
        assert status.startswith("error: notes.png: not an image"), status
    finally:
        if browser is not None:
            browser.close()
        code, err = server.stop()
    assert code == 0, err[-2000:]


# The first /predict of the page is held back 1.5 s after its answer arrived, as on a slow network;
# the signals of the page's requests are kept to see which were aborted.
SLOW_FIRST_PREDICT = """
window.signals = [];
const originalFetch = window.fetch;
let predicts = 0;
window.fetch = async (url, init) => {
  const first = String(url).startsWith("predict") && predicts++ === 0;
  window.signals.push([String(url), init && init.signal]);
  const resp = await originalFetch(url, init);
  if (first) await new Promise((done) => setTimeout(done, 1500));
  return resp;
};
true
"""


@pytest.mark.slow
def test_overlapping_uploads_show_only_the_last_images_result(run_dir, tmp_path):  # noqa: F811
    assert CHROMIUM is not None, "chromium is required in CI to check the served page works"
    first, last = tmp_path / "first.png", tmp_path / "last.png"
    first.write_bytes(png_bytes(0))
    last.write_bytes(png_bytes(2))
    server, browser = Server(run_dir), None
    try:
        want = {p.name: httpx.post(f"{server.url}/predict", files={"file": (p.name, p.read_bytes())},
                                   timeout=30).json()["top"] for p in (first, last)}
        assert want["first.png"][0]["probability"] != want["last.png"][0]["probability"]
        browser = Browser(tmp_path / "profile")
        node = open_page(browser, server.url)
        assert browser.evaluate(SLOW_FIRST_PREDICT)
        browser.send("DOM.setFileInputFiles", files=[str(first)], nodeId=node)
        browser.send("DOM.setFileInputFiles", files=[str(last)], nodeId=node)
        assert settled_state(browser) == "done"
        browser.wait_for("document.body.dataset.cam === 'done'")
        time.sleep(2.5)  # past the first answer's delay: it must not replace the last one
        top1, probability, rows, hidden = browser.evaluate(SHOWN)
        assert (top1, rows, hidden) == (want["last.png"][0]["class"], 3, False)
        assert abs(float(probability) - want["last.png"][0]["probability"]) < 1e-6
        assert browser.evaluate("document.getElementById('status').textContent") == "last.png"
        aborted = browser.evaluate("window.signals.map(([url, s]) => [url.split('?')[0], s.aborted])")
        assert aborted[0] == ["predict", True], aborted  # the first image's request was aborted
        assert ["predict", False] in aborted[1:] and ["explain", False] in aborted[1:], aborted
        assert ["explain", True] not in aborted and len(aborted) == 3, aborted  # no CAM of the first
    finally:
        if browser is not None:
            browser.close()
        code, err = server.stop()
    assert code == 0, err[-2000:]


@pytest.mark.slow
def test_page_shows_the_top1_and_the_gradcam_of_a_chosen_image(run_dir, tmp_path):  # noqa: F811
    assert CHROMIUM is not None, "chromium is required in CI to check the served page works"
    image = tmp_path / "chosen.png"
    image.write_bytes(png_bytes(7))
    server = Server(run_dir)
    browser = None
    try:
        api_top = httpx.post(f"{server.url}/predict", files={"file": ("chosen.png", image.read_bytes())},
                             timeout=30).json()["top"]
        browser = Browser(tmp_path / "profile")
        for domain in ("Page", "Runtime", "Network", "Log", "DOM"):
            browser.send(f"{domain}.enable")
        browser.send("Page.navigate", url=f"{server.url}/")
        browser.wait_for("document.readyState === 'complete' && !!document.getElementById('file')")
        browser.wait_for("document.getElementById('model').textContent.includes('classes')")
        root = browser.send("DOM.getDocument")["root"]["nodeId"]
        node = browser.send("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
        browser.send("DOM.setFileInputFiles", files=[str(image)], nodeId=node)
        state = browser.wait_for("['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state")
        assert state == "done", browser.evaluate("document.getElementById('status').textContent")
        top1 = browser.evaluate("document.getElementById('top1').textContent")
        assert top1 == api_top[0]["class"]
        shown = float(browser.evaluate("document.getElementById('top1').dataset.probability"))
        assert abs(shown - api_top[0]["probability"]) < 1e-6
        assert browser.evaluate("document.querySelectorAll('#bars .row').length") == len(api_top)
        browser.wait_for("document.body.dataset.cam === 'done'")
        browser.wait_for("document.getElementById('cam').complete && document.getElementById('cam').naturalWidth > 0")
        assert browser.evaluate("document.getElementById('cam').naturalWidth") == 32
        browser.send("Runtime.evaluate", expression="1")  # collect the events still queued
    finally:
        if browser is not None:
            browser.close()
        code, err = server.stop()
    assert code == 0, err[-2000:]
    requests = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    assert requests and all(u.startswith((server.url, "blob:", "data:")) for u in requests), requests
    errors = [e for e in browser.events
              if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")]
    assert not errors, errors
