"""A schemathesis check for requests the document calls valid but the service refuses as malformed.

The built-in `positive_data_acceptance` check must allow 400 here: a schema cannot say which SQL
parses or which named-query parameter values fit their declared type, so SQL_ERROR,
SQL_PARSE_ERROR and INVALID_PARAMS are honest answers to schema-valid bodies. INVALID_REQUEST is
not: it means the request broke a rule that the OpenAPI document should have stated.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis

# Error codes that say "this request is malformed", as opposed to "this SQL or value is wrong".
MALFORMED = frozenset({"INVALID_REQUEST"})


def _error_code(body: bytes) -> str | None:
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


@schemathesis.check
def schema_valid_request_is_well_formed(ctx: Any, response: Any, case: Any) -> bool | None:
    """A schema-valid request is never refused as malformed (400 INVALID_REQUEST)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    code = _error_code(response.content)
    if code in MALFORMED:
        raise AssertionError(
            f"The schema accepts this request, but the service refused it as {code}: "
            f"the document is missing a constraint the handler enforces.\n{response.text}"
        )
    return None
