"""The FiftyOne App, headless: its server as a child process, and a Chromium screenshot of a page.

``AppServer`` runs ``python -m fiftyone.server.main`` on 127.0.0.1 with the FiftyOne environment
it is given (database URI and name), writes its PID to a file and stops only that process.
``screenshot`` drives Debian's ``chromium --headless`` (flags from the platform notes) and also
returns the rendered DOM, so callers can tell a dataset grid from an error page.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AppServer", "AppServerError", "Screenshot", "find_chromium", "screenshot"]

ERROR_MARKERS = ("Something went wrong", "Traceback", "Internal Server Error", "Bad Gateway",
                 "Dataset not found", "No dataset", "Error:")


class AppServerError(RuntimeError):
    """The App server did not start, or the page could not be rendered."""


@dataclass
class AppServer:
    port: int
    env: dict[str, str] = field(repr=False)  # FIFTYONE_* variables (from the composition root)
    log_file: Path | None = None
    python: str = sys.executable
    start_timeout_s: float = 90.0
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def dataset_url(self, name: str) -> str:
        from urllib.parse import quote

        return f"{self.url}/datasets/{quote(name)}"

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/", timeout=3) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> None:
        if self._answers():
            raise AppServerError(f"something already answers at {self.url}; choose another port")
        env = dict(os.environ)
        env.update(self.env)
        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                [self.python, "-m", "fiftyone.server.main", "--port", str(self.port),
                 "--address", "127.0.0.1"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._answers():
            if self._proc.poll() is not None:
                raise AppServerError(f"the FiftyOne App exited with {self._proc.returncode} during "
                                     f"start-up (log: {self.log_file})")
            if time.monotonic() > deadline:
                self.stop()
                raise AppServerError(f"the FiftyOne App did not answer {self.url} within "
                                     f"{self.start_timeout_s:.0f} s (log: {self.log_file})")
            time.sleep(0.3)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def wait(self) -> int:
        """Block until the server exits (``dataengine curate open``)."""
        return self._proc.wait() if self._proc is not None else 0

    def stop(self) -> None:
        p = self._proc
        if p is None or p.poll() is not None:
            return
        # The server leads its own session (start_new_session): end its group, nothing else.
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=15)

    def __enter__(self) -> AppServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Screenshot:
    png: Path
    dom: str

    @property
    def error_markers(self) -> list[str]:
        return [m for m in ERROR_MARKERS if m in self.dom]


def _chromium_flags(profile: str) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
            f"--user-data-dir={profile}"]


def screenshot(url: str, out_png: Path, *, size: tuple[int, int] = (1400, 900),
               ready_text: str | None = None, min_canvases: int = 1, timeout_s: float = 90.0,
               settle_s: float = 3.0) -> Screenshot:
    """Render ``url`` in headless Chromium (selenium + Debian's chromium-driver): wait until the
    DOM holds ``ready_text`` and at least ``min_canvases`` drawn thumbnails (the App draws samples
    and their mask overlays on canvases), then save a PNG at ``out_png`` and return the DOM."""
    chromium = find_chromium()
    driver_bin = shutil.which("chromedriver")
    if chromium is None or driver_bin is None:
        raise AppServerError("chromium + chromium-driver are not installed "
                             "(apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        opts = Options()
        opts.binary_location = chromium
        opts.add_argument("--headless=new")
        for flag in _chromium_flags(profile)[1:] + [f"--window-size={size[0]},{size[1]}"]:
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
        try:
            driver.set_page_load_timeout(timeout_s)
            driver.get(url)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                dom = driver.page_source
                canvases = driver.execute_script(
                    "return document.querySelectorAll('canvas').length")
                if (ready_text is None or ready_text in dom) and canvases >= min_canvases:
                    break
                if any(m in dom for m in ERROR_MARKERS):
                    break
                time.sleep(0.5)
            time.sleep(settle_s)  # let the thumbnails' frames and overlays finish drawing
            driver.save_screenshot(str(out_png))
            return Screenshot(out_png, driver.page_source)
        finally:
            driver.quit()
