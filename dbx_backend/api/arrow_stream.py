"""The Arrow IPC stream answer (`Accept: application/vnd.apache.arrow.stream`).

The body is one Arrow IPC stream (Arrow's columnar format, "IPC Streaming Format"): the schema
message, one record batch message per batch as the warehouse's chunks arrive, then the
end-of-stream marker. The schema is sent with the first chunk's batches, because an open
column (INTERVAL, VARIANT, ...) takes the Arrow type the warehouse gave it there.

A stream may legally end without its end-of-stream marker, so a reader cannot tell a cut
stream from a short one by the messages alone. A failure after the first byte therefore ends
the body inside a message that never completes (the continuation marker, a metadata length of
2^31-1, then the error envelope as JSON) and the chunked response is cut without its last
chunk: an Arrow reader fails ("expected to read 2147483647 metadata bytes") and so does an HTTP
client (the body is incomplete).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson
import pyarrow as pa

from dbx_backend.api.streaming import ARROW
from dbx_backend.engine import Column, JsonValue, OpenStatement, arrow_form

CONTINUATION = b"\xff\xff\xff\xff"
END_OF_STREAM = CONTINUATION + b"\x00\x00\x00\x00"
# A message whose metadata length (int32, little-endian) promises more than will ever follow.
UNFINISHED_MESSAGE = CONTINUATION + (2**31 - 1).to_bytes(4, "little")


def stream_metadata(statement_id: str, truncated: bool, total_row_count: int) -> dict[str, str]:
    """The schema's metadata: what the NDJSON header and footer lines say."""
    return {
        "statement_id": statement_id,
        "truncated": "true" if truncated else "false",
        "total_row_count": str(total_row_count),
    }


class Messages(NamedTuple):
    """Record batches as their IPC messages, and how many rows they hold."""

    messages: list[memoryview]
    rows: int


class EncodedBatches:
    """The writer's chunk form: `ArrowBatches`, each batch then encoded as its IPC message
    where the chunk is decoded (in the reader's converting thread for a large chunk), so the
    event loop only writes bytes."""

    def __init__(self, batches: arrow_form.ArrowBatches) -> None:
        self.batches = batches

    def from_cells(
        self, cells: list[Any], *, check_cells: bool = False, first_row: int = 0
    ) -> Messages:
        """JSON_ARRAY rows, as Arrow batches' messages."""
        return _encoded(
            self.batches.from_cells(cells, check_cells=check_cells, first_row=first_row)
        )

    def from_arrow(self, batch: pa.RecordBatch) -> Messages:
        """An Arrow batch, passed through, cast or converted, as its message."""
        return _encoded(self.batches.from_arrow(batch))

    def from_arrow_stream(self, data: bytes, table: pa.Table) -> Messages | None:
        """A whole chunk whose batches pass through, as the warehouse's own record-batch
        messages: the bytes `serialize` would write again, without the copy. None when its
        messages are not plainly those (legacy framing, another metadata version, dictionary
        or compressed batches): the reader then hands its batches to `from_arrow`."""
        if not table.num_rows:  # `from_arrow` fixes the schema from an empty batch too
            return None
        messages = record_batch_messages(data)
        if messages is None or not _decoded_in_place(table, data):
            return None
        for batch in table.to_batches():  # fixes the stream's schema, as `from_arrow` does
            self.batches.from_arrow(batch)
        return Messages(messages, table.num_rows)

    def from_rows(self, rows: Sequence[Sequence[JsonValue]]) -> Messages:
        """Rows of a JSON answer, as Arrow batches' messages."""
        return _encoded(self.batches.from_rows(rows))

    def converts_cheaply(self, schema: pa.Schema) -> bool:
        """Batches of `schema` pass through: encoding them is one copy of their bytes."""
        return self.batches.passes_through(schema)

    def count(self, part: Messages) -> int:
        """Rows in `part`."""
        return part.rows

    def join(self, parts: list[Messages]) -> Messages:
        """The messages of `parts`, in order."""
        return Messages([m for part in parts for m in part.messages], sum(p.rows for p in parts))


def record_batch_messages(data: bytes) -> list[memoryview] | None:
    """The record batch messages of an IPC stream (views of `data`), after its schema; None
    unless every message is framed and versioned as this service writes its own (the
    continuation marker, metadata V5) and none is a dictionary batch."""
    view = memoryview(data)
    reader = pa.BufferReader(pa.py_buffer(data))
    messages: list[memoryview] = []
    schema_seen = False
    while (start := reader.tell()) < len(view):
        if view[start : start + 4] != CONTINUATION:
            return None  # the legacy framing
        try:
            message = pa.ipc.read_message(reader)
        except EOFError:  # the end-of-stream marker
            break
        except (pa.ArrowInvalid, OSError):
            return None
        if message.metadata_version != pa.ipc.MetadataVersion.V5:
            return None
        if not schema_seen:
            if message.type != "schema":
                return None
            schema_seen = True
        elif message.type == "record batch":
            messages.append(view[start : reader.tell()])
        else:
            return None
    return messages if schema_seen else None


def _decoded_in_place(table: pa.Table, data: bytes) -> bool:
    """Whether every buffer of `table` lies in `data`: its batches were read without a copy,
    so their messages hold them as they are (a compressed body is decoded elsewhere)."""
    whole = pa.py_buffer(data)
    low, high = whole.address, whole.address + whole.size
    return all(
        buffer is None or not buffer.size or low <= buffer.address < high
        for column in table.columns
        for chunk in column.chunks
        for buffer in chunk.buffers()
    )


def _encoded(batches: list[pa.RecordBatch]) -> Messages:
    messages = [memoryview(batch.serialize()) for batch in batches if batch.num_rows]
    return Messages(messages, sum(batch.num_rows for batch in batches))


class ArrowStreamWriter:
    """Frames record batches as one Arrow IPC stream."""

    content_type = ARROW
    media_type = ARROW
    cut_on_failure = True

    def __init__(self, batches: arrow_form.ArrowBatches) -> None:
        self._form = EncodedBatches(batches)
        self._schema_sent = False

    @classmethod
    def for_statement(cls, statement: OpenStatement) -> ArrowStreamWriter:
        """The writer of `statement`'s result."""
        metadata = stream_metadata(
            statement.statement_id, statement.truncated, statement.manifest.total_row_count
        )
        return cls(arrow_form.ArrowBatches(statement.columns, metadata=metadata))

    @property
    def form(self) -> EncodedBatches:
        """Record batches in the documented Arrow types, encoded."""
        return self._form

    def header(
        self,
        columns: Sequence[Column],
        statement_id: str,
        *,
        total_row_count: int | None = None,
        chunk_count: int | None = None,
    ) -> bytes:
        """Nothing yet: the schema leaves with the first batches."""
        return b""

    def part(self, part: Messages) -> Iterable[bytes | memoryview]:
        """The schema (before the first part), then one message per batch."""
        if self._schema_sent:
            return part.messages
        return [self._schema(), *part.messages]

    def footer(self, row_count: int, truncated: bool, server_timing: str = "") -> bytes:
        """The end-of-stream marker (after the schema, when no batch carried it)."""
        return (b"" if self._schema_sent else self._schema()) + END_OF_STREAM

    def failure(self, body: dict[str, JsonValue]) -> bytes:
        """The unfinished message that makes a reader fail, carrying the error envelope."""
        return UNFINISHED_MESSAGE + orjson.dumps(body)

    def _schema(self) -> bytes:
        self._schema_sent = True
        schema: Any = self._form.batches.schema()
        return bytes(schema.serialize())


def arrow_body(
    columns: Sequence[Column],
    rows: Sequence[Sequence[JsonValue]],
    *,
    statement_id: str,
    truncated: bool,
) -> bytes:
    """A whole Arrow stream of a JSON answer's rows (a cached answer asked for as Arrow)."""
    metadata = stream_metadata(statement_id, truncated, len(rows))
    writer = ArrowStreamWriter(arrow_form.ArrowBatches(columns, metadata=metadata))
    pieces = [bytes(piece) for piece in writer.part(writer.form.from_rows(rows))]
    return b"".join(pieces) + writer.footer(len(rows), truncated)
