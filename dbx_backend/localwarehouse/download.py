"""The download route behind EXTERNAL_LINKS: answers like a cloud storage presigned URL.

Like S3, it refuses a request that also carries an `Authorization` header (400), answers 403
to a forged or expired link or to missing required headers, and 404 once the result is gone
(reference §9). Error bodies are S3-style XML.
"""

from __future__ import annotations

import asyncio
import hmac
import uuid
from xml.sax.saxutils import escape

from aiohttp import web

from dbx_backend.localwarehouse.engine import SUCCEEDED
from dbx_backend.localwarehouse.errors import ApiError
from dbx_backend.localwarehouse.keys import CONFIG, ENGINE, SIGNER
from dbx_backend.localwarehouse.links import DOWNLOAD_PREFIX

CONTENT_TYPES = {
    "JSON_ARRAY": "application/json",
    "CSV": "text/csv",
    "ARROW_STREAM": "application/vnd.apache.arrow.stream",
}


def _storage_error(status: int, code: str, message: str) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


async def download(request: web.Request) -> web.Response:
    """GET a chunk's bytes through its signed link."""
    if "Authorization" in request.headers:
        return _storage_error(
            400,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
            "Signature query string parameter or the Authorization header should be specified",
        )
    statement_id = request.match_info["statement_id"]
    raw_index = request.match_info["chunk_index"]
    verdict = "forged"
    if raw_index.isdigit():
        verdict = request.app[SIGNER].check(
            statement_id,
            int(raw_index),
            request.query.get("X-Expires", ""),
            request.query.get("X-Signature", ""),
        )
    if verdict == "forged":
        return _storage_error(
            403, "SignatureDoesNotMatch", "The request signature we calculated does not match."
        )
    if verdict == "expired":
        return _storage_error(403, "AccessDenied", "Request has expired")
    for name, value in request.app[CONFIG].link_headers.items():
        if not hmac.compare_digest(request.headers.get(name, "").encode(), value.encode()):
            return _storage_error(
                403, "AccessDenied", "The headers required by this link were not all sent."
            )
    gone = _storage_error(404, "NoSuchKey", "The specified key does not exist.")
    try:
        statement = request.app[ENGINE].lookup(statement_id)
    except ApiError:
        return gone
    spool = statement.result
    if statement.state != SUCCEEDED or spool is None:
        return gone
    try:
        data = await asyncio.to_thread(spool.read, int(raw_index))
    except (OSError, ValueError, IndexError):
        return gone
    return web.Response(body=data, content_type=CONTENT_TYPES[statement.request.format])


def add_routes(app: web.Application) -> None:
    """Register the download route (no bearer token: the signature is the credential)."""
    app.router.add_get(DOWNLOAD_PREFIX + "/{statement_id}/{chunk_index}", download, name="download")
