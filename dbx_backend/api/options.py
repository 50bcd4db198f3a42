"""The query service's options for a request: the service's defaults and caps applied."""

from __future__ import annotations

from aiohttp import web

from dbx_backend.api.models import RunOptions
from dbx_backend.engine import NormalizeOptions, QueryOptions
from dbx_backend.keys import REQUEST_ID, SETTINGS

SERVICE_NAME = "dbx-backend"


def query_options(
    request: web.Request,
    body: RunOptions,
    *,
    streaming: bool = False,
    catalog: str | None = None,
    schema: str | None = None,
) -> QueryOptions:
    """The query service's options for this request, with the service's defaults and caps.

    A buffered JSON answer asks the warehouse for at most MAX_RESULT_ROWS rows and
    MAX_RESULT_BYTES bytes, so the warehouse itself reports `truncated`; streams are not capped.
    """
    settings = request.app[SETTINGS]
    row_limit, byte_limit = body.row_limit, None
    if not streaming:
        row_limit = min(row_limit or settings.max_result_rows, settings.max_result_rows)
        byte_limit = settings.max_result_bytes
    disposition = body.disposition or ("EXTERNAL_LINKS" if streaming else "INLINE")
    return QueryOptions(
        catalog=catalog or settings.databricks_catalog,
        schema=schema or settings.databricks_schema,
        row_limit=row_limit,
        byte_limit=byte_limit,
        timeout_s=min(body.timeout_s or settings.query_timeout_s, settings.max_query_timeout_s),
        max_rows=None if streaming else settings.max_result_rows,
        normalize=NormalizeOptions(long_as_string=body.long_as_string),
        query_tags={"request_id": request[REQUEST_ID], "service": SERVICE_NAME},
        disposition=disposition,
        result_format=settings.external_links_format,
        download_window=settings.download_window,
        stream=streaming,
    )
