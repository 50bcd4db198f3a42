"""Answers built from the contract models (`models.py`): a body is what the OpenAPI says.

Only the fields a handler set are written (a field left unset stays absent, not null). Result
rows are already JSON values (the engine normalized them), so they go into the body as they
are: validating and dumping each cell again would cost as much as producing it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiohttp import web
from pydantic import BaseModel

from dbx_backend.api.errors import json_response
from dbx_backend.api.models import ColumnModel
from dbx_backend.engine import Column, JsonValue


def model_response(
    model: BaseModel,
    status: int = 200,
    *,
    rows: Sequence[Sequence[JsonValue]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """`model` as a JSON response; `rows` fill its `rows` field as given."""
    payload = model.model_dump(mode="json", exclude_unset=True)
    if rows is not None:
        payload["rows"] = rows
    return json_response(payload, status, headers)


def column_models(columns: Sequence[Column]) -> list[ColumnModel]:
    """The engine's columns as the contract's column objects."""
    return [ColumnModel.model_validate(column.to_json()) for column in columns]
