"""Debian's Chromium, driven by Playwright, for tests of the dev console in a real browser.

`scripts/bootstrap dev` installs Chromium (through `scripts/system-packages`); the tests never
skip: without it they fail, saying so.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from playwright.async_api import Browser, async_playwright

# Headless, no sandbox (tests run as root), and nothing that reaches beyond loopback: no
# background networking, component updates, sync or QUIC. Playwright adds --headless and a
# fresh --user-data-dir of its own for every launch.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_path() -> str:
    """The system Chromium (`CHROMIUM` overrides); the test fails when there is none."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed: the dev console's tests drive a real one. "
            "Run scripts/bootstrap dev as root, or apt-get install chromium."
        )
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium for the life of the block."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()
