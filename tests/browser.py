"""Debian's Chromium, driven by Playwright, for tests of the dev console in a real browser.

CI installs Chromium (`scripts/install-chromium`) and sets `CI`, so there a missing browser
fails the tests; elsewhere they are skipped with the command that installs it.
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
    """The system Chromium (`CHROMIUM` overrides); skip, or fail under CI, when it is missing."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if path is None:
        message = "Chromium is not installed: run scripts/install-chromium (apt-get, as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
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
