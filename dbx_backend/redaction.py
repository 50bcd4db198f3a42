"""Removing secrets from text before it is logged or shown: tokens, URLs, hosts."""

from __future__ import annotations

import re
from collections.abc import Iterable

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
# Databricks personal access tokens (dapi..., dkea...) and JWT-shaped OAuth tokens.
_TOKENISH = re.compile(r"\b(dapi[0-9a-f]{8,}\S*|dkea[0-9a-f]{8,}\S*|eyJ[\w-]{10,}\.[\w.-]+)")


def redact(text: str, secrets: Iterable[str] = (), *, urls: bool = True) -> str:
    """Remove the given secrets and hosts, then URLs (unless `urls` is false: text that must
    name a URL the caller sent) and anything shaped like a token."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    if urls:
        text = _URL.sub("[redacted-url]", text)
    return _TOKENISH.sub("[redacted]", text)
