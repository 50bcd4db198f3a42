"""Handlers of the Statement Execution API: execute, get, get chunk, cancel (reference §2-4)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web

from dbx_backend.localwarehouse.engine import SUCCEEDED, Statement
from dbx_backend.localwarehouse.errors import ApiError, invalid
from dbx_backend.localwarehouse.keys import CONFIG, ENGINE, POWER, SIGNER
from dbx_backend.localwarehouse.request import parse_execute_request
from dbx_backend.localwarehouse.responses import (
    STATEMENTS_PATH,
    chunk_position,
    manifest_body,
    statement_body,
)

log = logging.getLogger(__name__)
CANCEL_GRACE_S = 10.0  # how long `on_wait_timeout=CANCEL` waits for the interrupt to land


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON answer serialised with orjson (pre-encoded chunk data is spliced in as is)."""
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def read_json(request: web.Request) -> Any:
    """The decoded JSON body, None when empty; 400 MALFORMED_REQUEST when it is not JSON."""
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(
            400, "MALFORMED_REQUEST", "Invalid JSON given in the body of the request"
        ) from None


async def execute(request: web.Request) -> web.Response:
    """POST /api/2.0/sql/statements: submit, then wait as `wait_timeout` says (§3.3)."""
    body = parse_execute_request(await read_json(request))
    if body.warehouse_id != request.app[CONFIG].warehouse_id:
        # The real answer for an unknown warehouse is unconfirmed (reference §3.1): 404.
        raise ApiError(
            404, "RESOURCE_DOES_NOT_EXIST", f"SQL warehouse {body.warehouse_id} does not exist."
        )
    engine = request.app[ENGINE]
    statement = engine.submit(body)
    # A stopped warehouse is started by the statement, which stays PENDING until it runs.
    request.app[POWER].run(statement)
    if body.wait_timeout_s == 0:
        return json_response(
            {"statement_id": statement.statement_id, "status": {"state": "PENDING"}}
        )
    config = request.app[CONFIG]
    finished = await statement.wait(body.wait_timeout_s * config.wait_timeout_scale)
    if not finished and body.on_wait_timeout == "CANCEL":
        engine.cancel(statement)
        await statement.wait(CANCEL_GRACE_S)
    return await _statement_response(request, statement)


async def get_statement(request: web.Request) -> web.Response:
    """GET /api/2.0/sql/statements/{id}: status, and manifest + chunk 0 when SUCCEEDED."""
    statement = request.app[ENGINE].lookup(request.match_info["statement_id"])
    return await _statement_response(request, statement)


async def get_chunk(request: web.Request) -> web.Response:
    """GET .../result/chunks/{n}: one chunk's `ResultData`, in any order, any number of times."""
    statement = request.app[ENGINE].lookup(request.match_info["statement_id"])
    chunk_index = _index(request.match_info["chunk_index"], "chunk_index")
    if "row_offset" in request.query:
        _index(request.query["row_offset"], "row_offset")
    if statement.state != SUCCEEDED or statement.result is None:
        raise ApiError(
            400,
            "INVALID_STATE",
            f"Statement {statement.statement_id} is {statement.state}; "
            "result chunks are available only while it is SUCCEEDED.",
        )
    if chunk_index >= len(statement.result.chunks):
        raise invalid(
            f"chunk_index {chunk_index} is out of range: the result has "
            f"{len(statement.result.chunks)} chunks"
        )
    return json_response(await result_data(request, statement, chunk_index))


async def cancel(request: web.Request) -> web.Response:
    """POST .../cancel: acknowledge; a running statement ends CANCELED (§4.3)."""
    await read_json(request)  # empty or `{}`; anything else JSON is tolerated
    engine = request.app[ENGINE]
    statement = engine.lookup(request.match_info["statement_id"])
    log.info("cancel of statement %s requested while %s", statement.statement_id, statement.state)
    engine.cancel(statement)
    return json_response({})


async def close(request: web.Request) -> web.Response:
    """DELETE .../{id}: not public API, but used by some connectors; close the statement."""
    engine = request.app[ENGINE]
    statement = engine.lookup(request.match_info["statement_id"])
    engine.cancel(statement)
    engine.close_result(statement)
    return json_response({})


async def result_data(request: web.Request, statement: Statement, chunk_index: int) -> Any:
    """`ResultData` of one chunk: rows inline, or a fresh signed link (§5.4, §5.5)."""
    config = request.app[CONFIG]
    spool = statement.result
    assert spool is not None, "only SUCCEEDED statements have chunks"  # noqa: S101
    position = chunk_position(statement, chunk_index)
    if statement.request.disposition == "EXTERNAL_LINKS":
        base = f"{request.scheme}://{request.host}"
        url, expiration = request.app[SIGNER].sign(base, statement.statement_id, chunk_index)
        link: dict[str, Any] = {
            **position,
            "byte_count": spool.chunks[chunk_index].byte_count,
            "external_link": url,
            "expiration": expiration,
        }
        if config.link_headers:
            link["http_headers"] = dict(config.link_headers)
        return {"external_links": [link]}
    try:
        data = await asyncio.to_thread(spool.read, chunk_index)
    except (OSError, ValueError):
        raise ApiError(
            400, "INVALID_STATE", f"Statement {statement.statement_id} is CLOSED."
        ) from None
    if config.close_after_last_chunk and chunk_index == len(spool.chunks) - 1:
        request.app[ENGINE].close_result(statement)
    return {**position, "data_array": orjson.Fragment(data)}


async def _statement_response(request: web.Request, statement: Statement) -> web.Response:
    if statement.state == SUCCEEDED:
        # The manifest is taken first: reading the only chunk may close the statement (strict).
        manifest = manifest_body(statement)
        return json_response(
            statement_body(statement, manifest, await result_data(request, statement, 0))
        )
    return json_response(statement_body(statement))


def _index(raw: str, name: str) -> int:
    if not raw.isdigit():
        raise invalid(f"{name} must be a non-negative integer")
    return int(raw)


def add_routes(app: web.Application) -> None:
    """Register the statement endpoints; execute with and without the trailing slash."""
    item = STATEMENTS_PATH + "/{statement_id}"
    app.router.add_post(STATEMENTS_PATH, execute, name="execute")
    app.router.add_post(STATEMENTS_PATH + "/", execute, name="execute_slash")
    app.router.add_get(item, get_statement, name="get_statement")
    app.router.add_delete(item, close, name="close")
    app.router.add_get(item + "/result/chunks/{chunk_index}", get_chunk, name="get_chunk")
    app.router.add_post(item + "/cancel", cancel, name="cancel")
