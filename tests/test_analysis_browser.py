"""The page written by `jsae report` opens in a real headless Chromium: no console
errors, every figure decodes, and a full-page screenshot is taken.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe``
(JSON messages separated by NUL bytes on file descriptors 3 and 4), so nothing
beyond the ``chromium`` binary is needed. Chromium is required: without it the test
fails and says which package to install.
"""
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


APT_HINT = "install it with `apt-get install chromium` (Debian/Ubuntu package `chromium`)"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe"]
WIDTH, HEIGHT = 1280, 900


def chromium_binary() -> str:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    pytest.fail(f"Chromium not found (looked for chromium, chromium-browser, google-chrome and $CHROMIUM); "
                f"{APT_HINT}.")


class Chromium:
    """A headless Chromium with one page, spoken to over the DevTools pipe."""

    def __init__(self, binary: str, workdir: Path, timeout: float = 60.0):
        self.timeout, self.events, self._next, self._buf = timeout, [], 0, b""
        self.profile = Path(tempfile.mkdtemp(prefix="profile-", dir=workdir))
        self.log = workdir / "chromium.log"
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()
        # Copies at fd >= 10, so bash can move them to 3 and 4 without clobbering.
        a, b = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10), fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)
        for fd in (to_child, from_child):
            os.close(fd)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["bash", "-c", f'exec "$0" "$@" 3<&{a} 4>&{b}', binary, *FLAGS,
                 f"--user-data-dir={self.profile}", "about:blank"],
                pass_fds=(a, b), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        os.close(a)
        os.close(b)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"no answer from Chromium (exit status {self.proc.poll()}); its log: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            if select.select([self._read], [], [], min(left, 1.0))[0]:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the pipe; its log: {self.log.read_text()[-2000:]}")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: bool = False, **params) -> dict:
        """Send one command and return its result (events seen meanwhile are kept)."""
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._write, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            e = self._message(deadline)
            if e.get("method") == method:
                return e
            self.events.append(e)

    def open(self, url: str) -> dict:
        """Load ``url``; returns ``{"errors": [...], "images": [...], "height": px}``."""
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        self.wait_event("Page.loadEventFired")
        # Let late scripts and decodes report before reading the page state.
        state = self.evaluate("""new Promise(done => setTimeout(() => done({
            images: Array.from(document.images, i => ({alt: i.alt, complete: i.complete,
                                                       width: i.naturalWidth, height: i.naturalHeight})),
            height: document.documentElement.scrollHeight,
            overflowX: document.documentElement.scrollWidth > window.innerWidth}), 300))""")
        return {"errors": self.console_errors(), **state}

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                        awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"script failed: {res['exceptionDetails']}")
        return res["result"]["value"]

    def console_errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif e.get("method") == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log ({p['entry']['source']}): {p['entry']['text']} {p['entry'].get('url', '')}")
        return out

    def screenshot(self, path: Path, height: int) -> Path:
        """A PNG of the whole page (``height`` CSS pixels, at most 16000)."""
        clip = {"x": 0, "y": 0, "width": WIDTH, "height": min(max(height, HEIGHT), 16000), "scale": 1}
        data = self.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True,
                         clip=clip)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except RuntimeError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._read, self._write):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Chromium(chromium_binary(), tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()


def test_the_checks_see_console_errors_and_broken_images(browser, tmp_path):
    """A page with a console error, an uncaught exception and a broken image is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><html><body><img alt='broken' src='data:image/png;base64,AAAA'>"
                    "<script>console.error('planted error'); throw new Error('planted exception');</script>"
                    "</body></html>")
    state = browser.open(page.as_uri())
    text = "\n".join(state["errors"])
    assert "planted error" in text and "planted exception" in text, state
    assert state["images"] == [{"alt": "broken", "complete": True, "width": 0, "height": 0}]


def test_report_opens_without_errors_and_every_figure_loads(browser, tmp_path, analysed_run):
    report = analysed_run / "analysis" / "report.html"
    state = browser.open(report.as_uri())
    assert state["errors"] == [], "\n".join(state["errors"])
    images = state["images"]
    listed = sum(sum(str(f).endswith(".png") for f in json.loads(p.read_text())["files"])
                 for p in (analysed_run / "analysis").glob("*/analysis.json"))
    assert len(images) == listed + len(list(analysed_run.glob("*.png"))) >= 8   # every figure the analyses list
    broken = [i["alt"] for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    assert not state["overflowX"], "the page is wider than the window (horizontal scrolling)"
    shot = browser.screenshot(tmp_path / "report.png", state["height"])
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    print(f"screenshot: {shot} ({len(data)} bytes, page height {state['height']} px)")
