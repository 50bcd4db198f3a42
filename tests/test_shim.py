"""The aioresponses shim works on the installed aiohttp."""

import aiohttp
from aioresponses import aioresponses


async def test_mocked_get_returns_the_payload(mocked: aioresponses) -> None:
    mocked.get("https://example.test/x", payload={"ok": True})

    async with aiohttp.ClientSession() as session, session.get("https://example.test/x") as resp:
        body = await resp.json()

    assert body == {"ok": True}
