"""What can go wrong when talking to a SQL warehouse.

* WarehouseError
  + WarehouseRejected        the warehouse refused our request; retrying cannot help
    - Unauthenticated, PermissionDenied, NotFound, BadRequest, LinkExpired
  + WarehouseUnavailable     the warehouse may answer later; safe requests are retried
    - RateLimited, ServerError, ConnectFailed, ResponseLost, TokenUnavailable
  + StatementFailed          the statement ran and failed (a SQL problem)
  + StatementCanceled        the statement was cancelled, and not by us
  + StatementClosed          the statement succeeded but its result is gone
  + StatementTimedOut        our deadline passed; the statement was cancelled
  + ProtocolError            the warehouse answered something the protocol does not allow

Messages are safe to log: they never hold a token, a presigned URL or parameter values.
`may_have_run` is set by the engine when the failure came after a submit that may have started
the statement: sending the same request again could run it twice.
"""

from __future__ import annotations


class WarehouseError(Exception):
    """Base class: the warehouse rejected or failed a request."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        retry_after: float | None = None,
        statement_id: str | None = None,
        sql_state: str | None = None,
        may_have_run: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = error_code
        self.retry_after = retry_after
        self.statement_id = statement_id
        self.sql_state = sql_state
        self.may_have_run = may_have_run


class WarehouseRejected(WarehouseError):
    """The warehouse refused the request itself; repeating it cannot help."""


class Unauthenticated(WarehouseRejected):
    """401: the service's Databricks credential was not accepted."""


class PermissionDenied(WarehouseRejected):
    """403: the service's identity may not do this."""


class NotFound(WarehouseRejected):
    """404: unknown (or purged) statement or warehouse."""


class BadRequest(WarehouseRejected):
    """400 and other 4xx: the warehouse rejected the request's fields."""


class LinkExpired(WarehouseRejected):
    """A presigned result link is no longer valid; fetch a fresh one for its chunk."""


class WarehouseUnavailable(WarehouseError):
    """The warehouse may answer later; idempotent requests are retried."""

    retryable = True


class RateLimited(WarehouseUnavailable):
    """429: too many requests; `retry_after` holds the server's wish, if any."""


class ServerError(WarehouseUnavailable):
    """5xx from the warehouse or a gateway in front of it."""


class ConnectFailed(WarehouseUnavailable):
    """No connection was made, so the request never left us: always safe to retry."""


class ResponseLost(WarehouseUnavailable):
    """The request was sent but no full response came back: it may have run."""


class TokenUnavailable(WarehouseUnavailable):
    """No access token could be obtained from the workspace's token endpoint."""


class StatementFailed(WarehouseError):
    """The statement ran and failed: a SQL problem the user can fix (state FAILED)."""


class StatementCanceled(WarehouseError):
    """The statement ended CANCELED without us asking for it."""


class StatementClosed(WarehouseError):
    """The statement succeeded but its result is no longer available (state CLOSED)."""


class StatementTimedOut(WarehouseError):
    """Our deadline passed before a result; the statement was cancelled on the warehouse."""


class ProtocolError(WarehouseError):
    """The warehouse answered something the protocol does not allow (bad JSON, bad chunks)."""
