"""Reading a request body: within `BODY_READ_TIMEOUT_S`, within `MAX_BODY_BYTES`, decoded.

The application turns aiohttp's own decoding off (`auto_decompress=False`): a body it cannot
decode fails inside the connection, as a 500 with a stack trace. Here it is a 400, and a
`Content-Encoding` the service does not decode is a 415, both in the error envelope.
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web

from dbx_backend.api.errors import (
    InvalidRequest,
    MalformedBody,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedEncoding,
)

# zlib window sizes: 16 + 15 reads a gzip member, 15 a zlib stream (HTTP's "deflate").
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
ENCODINGS = ("gzip", "deflate")


async def read_body(request: web.Request, *, timeout_s: float) -> bytes:
    """The decoded body; 408, 413, 415 or 400 (as ApiErrors) when it cannot be had."""
    content = request.content
    try:
        if content.is_eof():  # it all came with the headers: nothing to wait for
            # Taken from the buffer as is (what `read()` gathers chunk by chunk, awaiting each).
            raw = content.read_nowait()
            if request.client_max_size and len(raw) > request.client_max_size:
                raise web.HTTPRequestEntityTooLarge(request.client_max_size, len(raw))
        else:
            async with asyncio.timeout(timeout_s):
                raw = await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {timeout_s:g} s", field="body"
        ) from None
    except web.RequestPayloadError:
        raise MalformedBody("the request body is malformed", field="body") from None
    except ConnectionError:
        # The client left mid-body: nobody waits for an answer. End the request as aiohttp
        # ends one whose client disconnects (the access log says 499).
        raise asyncio.CancelledError from None
    encoding = request.headers.get("Content-Encoding")
    if not encoding:
        return raw
    return decode_body(raw, encoding, request.client_max_size)


def decode_body(raw: bytes, content_encoding: str, limit: int) -> bytes:
    """`raw` decoded per `content_encoding`, refusing more than `limit` decoded bytes."""
    if not content_encoding:
        return raw
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return raw
    if len(codings) > 1 or codings[0] not in _WBITS:
        raise UnsupportedEncoding(
            f"Content-Encoding {content_encoding.strip()!r} is not supported; send the body "
            f"uncompressed or as one of: {', '.join(ENCODINGS)}",
            field="Content-Encoding",
        )
    decoder = zlib.decompressobj(_WBITS[codings[0]])
    try:
        body = decoder.decompress(raw, limit + 1)  # a small body may expand a thousandfold
    except zlib.error:
        body = None
    if body is not None and len(body) > limit:
        raise PayloadTooLarge(f"the decoded request body is larger than {limit} bytes")
    if body is None or not decoder.eof or decoder.unused_data:
        raise InvalidRequest(
            f"the request body is not valid {codings[0]} data", field="Content-Encoding"
        )
    return body
