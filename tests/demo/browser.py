"""Open a local HTML file in headless Chromium (Debian's ``chromium``): DOM, console, screenshot.

Console messages are read from Chromium's own log (``--enable-logging=stderr``), where every
``console.*`` call and every uncaught exception or failed load appears as a ``CONSOLE``
line. The report is meant to print nothing, so any such line counts as an error.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
_CONSOLE = re.compile(r":CONSOLE(?:\(\d+\))?:?\d*\]\s*(.*)")


@dataclass
class PageResult:
    dom: str
    console: list[str]


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("headless Chromium not found: apt-get install -y chromium")


def _base_args(profile: str) -> list[str]:
    # As root Chromium needs --no-sandbox; no network and no GPU on these machines.
    return [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-extensions", "--no-first-run",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}"]


def _address(target: Path | str) -> str:
    return target if isinstance(target, str) else target.resolve().as_uri()


def load_page(path: Path | str, *, timeout: float = 90.0) -> PageResult:
    """The DOM after the page's scripts ran, and every console line it produced (a file,
    or a URL such as the served dashboard's)."""
    with tempfile.TemporaryDirectory(prefix="nrr-chromium-") as profile:
        completed = subprocess.run(
            [*_base_args(profile), "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=3000", "--dump-dom", _address(path)],
            capture_output=True, text=True, timeout=timeout, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"chromium exited {completed.returncode}: {completed.stderr[-2000:]}")
    console = [m.group(1) for line in completed.stderr.splitlines()
               if (m := _CONSOLE.search(line))]
    return PageResult(dom=completed.stdout, console=console)


def screenshot(path: Path | str, target: Path, *, width: int = 1400, height: int = 3000,
               timeout: float = 90.0) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nrr-chromium-") as profile:
        completed = subprocess.run(
            [*_base_args(profile), "--hide-scrollbars", f"--window-size={width},{height}",
             f"--screenshot={target}", _address(path)],
            capture_output=True, text=True, timeout=timeout, check=False)
    if completed.returncode != 0 or not target.is_file():
        raise RuntimeError(f"chromium screenshot failed ({completed.returncode}): "
                           f"{completed.stderr[-2000:]}")
    return target
