"""The JSON shapes the warehouse answers with (reference §5), built from engine state."""

from __future__ import annotations

import uuid
from typing import Any

from dbx_backend.localwarehouse.engine import FAILED, SUCCEEDED, Statement

STATEMENTS_PATH = "/api/2.0/sql/statements"


def error_body(error_code: str, message: str) -> dict[str, Any]:
    """The standard error body with a request id, as the real service sends (§8.1)."""
    return {
        "error_code": error_code,
        "message": message,
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.RequestInfo",
                "request_id": str(uuid.uuid4()),
                "serving_data": "",
            }
        ],
    }


def status_body(statement: Statement) -> dict[str, Any]:
    """`StatementStatus`: the state, plus error and SQLSTATE when FAILED."""
    status: dict[str, Any] = {"state": statement.state}
    if statement.state == FAILED and statement.error is not None:
        status["error"] = {
            "error_code": statement.error.error_code,
            "message": statement.error.message,
        }
        status["sql_state"] = statement.error.sql_state
    return status


def manifest_body(statement: Statement) -> dict[str, Any]:
    """`ResultManifest` of a SUCCEEDED statement; byte counts only for EXTERNAL_LINKS (§5.3)."""
    spool = statement.result
    assert spool is not None, "a SUCCEEDED statement has a result"  # noqa: S101
    external = statement.request.disposition == "EXTERNAL_LINKS"
    chunks = []
    for chunk in spool.chunks:
        info = {
            "chunk_index": chunk.chunk_index,
            "row_offset": chunk.row_offset,
            "row_count": chunk.row_count,
        }
        if external:
            info["byte_count"] = chunk.byte_count
        chunks.append(info)
    manifest: dict[str, Any] = {
        "format": statement.request.format,
        "schema": {"column_count": len(statement.columns), "columns": statement.columns},
        "total_chunk_count": len(spool.chunks),
        "chunks": chunks,
        "total_row_count": spool.total_row_count,
        "truncated": spool.truncated,
    }
    if external:
        manifest["total_byte_count"] = spool.total_byte_count
    return manifest


def chunk_position(statement: Statement, chunk_index: int) -> dict[str, Any]:
    """Where a chunk sits, and the pointers to the next one unless it is the last."""
    spool = statement.result
    assert spool is not None, "a SUCCEEDED statement has a result"  # noqa: S101
    chunk = spool.chunks[chunk_index]
    position: dict[str, Any] = {
        "chunk_index": chunk.chunk_index,
        "row_offset": chunk.row_offset,
        "row_count": chunk.row_count,
    }
    if chunk_index + 1 < len(spool.chunks):
        following = spool.chunks[chunk_index + 1]
        position["next_chunk_index"] = following.chunk_index
        position["next_chunk_internal_link"] = (
            f"{STATEMENTS_PATH}/{statement.statement_id}/result/chunks/"
            f"{following.chunk_index}?row_offset={following.row_offset}"
        )
    return position


def statement_body(
    statement: Statement, manifest: dict[str, Any] | None = None, result: Any = None
) -> dict[str, Any]:
    """`StatementResponse`: id and status, plus manifest and chunk 0 when given (SUCCEEDED)."""
    if manifest is not None:
        return {
            "statement_id": statement.statement_id,
            "status": {"state": SUCCEEDED},
            "manifest": manifest,
            "result": result,
        }
    return {"statement_id": statement.statement_id, "status": status_body(statement)}
