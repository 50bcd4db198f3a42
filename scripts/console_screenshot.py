"""Take the README's screenshot of the dev console (docs/console.png).

Runs `dbx-backend dev` with the repository's named queries on a free loopback port, opens the
console in Debian's Chromium (headless, through Playwright), runs the editor's query twice as
buffered JSON (the second from the result cache), opens a table and a named query, and saves a
PNG. Usage: .venv/bin/python scripts/console_screenshot.py
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "console.png"
CHROMIUM_ARGS = [  # as the console tests launch it: nothing leaves loopback
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_health(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("dbx-backend dev exited before answering /health")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):  # noqa: S310 - loopback
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("dbx-backend dev did not answer /health in time")


async def shoot(url: str, chromium: str) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True
        )
        page = await browser.new_page(viewport={"width": 1360, "height": 860})
        await page.goto(url)
        await page.locator('details[data-table="samples.nyctaxi.trips"] summary').click()
        await page.locator('details[data-table="samples.nyctaxi.trips"] li').first.wait_for()
        await page.locator('details[data-query="trips_by_zip"] summary').click()
        # Twice as buffered JSON: the second answer comes from the result cache.
        await page.select_option("#format", "json")
        for _ in range(2):
            await page.click("#run")
            await page.wait_for_selector('#status[data-state="done"]')
            await page.wait_for_function("document.getElementById('grid').dataset.firstRowMs")
        await page.screenshot(path=str(OUTPUT))
        await browser.close()


def main() -> int:
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Chromium is missing: run scripts/bootstrap dev as root")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_")}
    env |= {"QUERIES_DIR": str(ROOT / "queries"), "LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory() as workdir:  # no .env of the developer's
        command = [sys.executable, "-m", "dbx_backend", "dev", "--port", str(port)]
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and package
            command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_health(url, process)
            asyncio.run(shoot(url, chromium))
        finally:
            process.terminate()
            process.wait(30)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
