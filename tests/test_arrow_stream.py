"""The Arrow IPC stream answer against the local warehouse: types, order, failures, disconnects."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pyarrow as pa
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dbx_backend.api import arrow_stream
from dbx_backend.api.cached import SEND_SLICE_BYTES
from dbx_backend.app import create_app
from dbx_backend.engine import Column, arrow_form
from dbx_backend.engine.query_service import PollSchedule
from dbx_backend.localwarehouse import Fault, LocalWarehouse
from dbx_backend.warehouse.retry import NO_WAIT
from tests.conftest import Client, StartLocalWarehouse, StartService, warehouse_settings

ARROW = "application/vnd.apache.arrow.stream"
FAST_POLL = PollSchedule(initial_s=0.01, factor=1.5, max_s=0.1)

EVERY_TYPE_SQL = (
    "SELECT CAST(1 AS TINYINT) AS b, CAST(2 AS SMALLINT) AS s, CAST(3 AS INT) AS i, "
    "CAST(9223372036854775807 AS BIGINT) AS l, CAST(1.5 AS FLOAT) AS f, "
    "CAST('NaN' AS DOUBLE) AS d, CAST('123.4500' AS DECIMAL(38,4)) AS dec, true AS t, "
    "'' AS empty, 'héllo ☃' AS u, DATE'1900-02-28' AS dt, "
    "TIMESTAMP'2024-01-15 09:30:00.123' AS ts, "
    "CAST('2024-01-15 09:30:00.000456' AS TIMESTAMP_NTZ) AS ntz, X'CAFE' AS bin, "
    "ARRAY(1, 2) AS arr, NAMED_STRUCT('id', CAST(9007199254740993 AS BIGINT), "
    "'price', CAST(1.10 AS DECIMAL(10,2))) AS st, MAP('k', CAST(2.5 AS DOUBLE)) AS m, "
    "CAST(NULL AS STRING) AS nul"
)
EVERY_TYPE_ARROW = [
    ("b", pa.int8(), "TINYINT", 1),
    ("s", pa.int16(), "SMALLINT", 2),
    ("i", pa.int32(), "INT", 3),
    ("l", pa.int64(), "BIGINT", 9223372036854775807),
    ("f", pa.float32(), "FLOAT", 1.5),
    ("d", pa.float64(), "DOUBLE", "nan"),
    ("dec", pa.decimal128(38, 4), "DECIMAL(38,4)", Decimal("123.4500")),
    ("t", pa.bool_(), "BOOLEAN", True),
    ("empty", pa.string(), "STRING", ""),
    ("u", pa.string(), "STRING", "héllo ☃"),
    ("dt", pa.date32(), "DATE", date(1900, 2, 28)),
    ("ts", pa.timestamp("us", "UTC"), "TIMESTAMP", datetime(2024, 1, 15, 9, 30, 0, 123000, UTC)),
    ("ntz", pa.timestamp("us"), "TIMESTAMP_NTZ", datetime(2024, 1, 15, 9, 30, 0, 456)),
    ("bin", pa.binary(), "BINARY", b"\xca\xfe"),
    ("arr", pa.list_(pa.int32()), "ARRAY<INT>", [1, 2]),
    (
        "st",
        pa.struct([("id", pa.int64()), ("price", pa.decimal128(10, 2))]),
        "STRUCT<id:BIGINT,price:DECIMAL(10,2)>",
        {"id": 9007199254740993, "price": Decimal("1.10")},
    ),
    ("m", pa.map_(pa.string(), pa.float64()), "MAP<STRING,DOUBLE>", [("k", 2.5)]),
    ("nul", pa.string(), "STRING", None),
]
WAREHOUSE_FORMATS = [
    pytest.param("INLINE", "JSON_ARRAY", id="inline-json-array"),
    pytest.param("EXTERNAL_LINKS", "JSON_ARRAY", id="links-json-array"),
    pytest.param("EXTERNAL_LINKS", "ARROW_STREAM", id="links-arrow"),
]
# 100 chunks of 1,000 rows with ~1 KB each.
WIDE_SQL = "SELECT id, repeat('x', 1000) AS pad FROM range(100000) t(id)"
CHUNKS = 100


@pytest.fixture
async def warehouse(local_warehouse: StartLocalWarehouse) -> LocalWarehouse:
    return await local_warehouse(chunk_rows=1000, wait_timeout_scale=0.02)


def make_app(warehouse: LocalWarehouse, **env: str) -> web.Application:
    settings = warehouse_settings(warehouse, DOWNLOAD_WINDOW="2", **env)
    return create_app(settings, retry_policy=NO_WAIT, poll_schedule=FAST_POLL)


async def start(start_service: StartService, warehouse: LocalWarehouse, **env: str) -> Client:
    settings = warehouse_settings(warehouse, DOWNLOAD_WINDOW="2", **env)
    return await start_service(settings, poll_schedule=FAST_POLL)


async def arrow_query(
    client: Client, body: dict[str, Any], path: str = "/api/query", **headers: str
) -> tuple[aiohttp.ClientResponse, bytes]:
    response = await client.post(path, json=body, headers={"Accept": ARROW, **headers})
    return response, await response.read()


def python_rows(table: pa.Table) -> list[list[Any]]:
    """The table's values, NaN as "nan" so that rows compare equal."""
    return [
        [str(v) if isinstance(v, float) and v != v else v for v in row.values()]
        for row in table.to_pylist()
    ]


async def read_into(response: aiohttp.ClientResponse, received: bytearray) -> None:
    async for piece in response.content.iter_any():
        received.extend(piece)


def downloads(warehouse: LocalWarehouse) -> int:
    return sum(1 for r in warehouse.requests if r.endpoint == "download")


@pytest.mark.parametrize(("disposition", "fmt"), WAREHOUSE_FORMATS)
async def test_every_type_arrives_in_its_documented_arrow_type_with_its_type_text(
    warehouse: LocalWarehouse, start_service: StartService, disposition: str, fmt: str
) -> None:
    client = await start(start_service, warehouse, EXTERNAL_LINKS_FORMAT=fmt)

    response, body = await arrow_query(client, {"sql": EVERY_TYPE_SQL, "disposition": disposition})
    table = pa.ipc.open_stream(body).read_all()

    assert response.status == 200
    assert response.headers["Content-Type"] == ARROW
    assert [(f.name, f.type) for f in table.schema] == [(n, t) for n, t, _, _ in EVERY_TYPE_ARROW]
    assert [f.metadata[b"type_text"].decode() for f in table.schema] == [
        text for _, _, text, _ in EVERY_TYPE_ARROW
    ]
    assert python_rows(table) == [[value for *_, value in EVERY_TYPE_ARROW]]


async def test_a_multi_chunk_result_streams_in_order_with_its_statement_in_the_schema(
    warehouse: LocalWarehouse, start_service: StartService
) -> None:
    client = await start(start_service, warehouse)

    response, body = await arrow_query(client, {"sql": "SELECT id FROM range(5500) t(id)"})
    reader = pa.ipc.open_stream(body)
    batches = list(reader)

    assert response.status == 200
    assert len(batches) >= 6
    ids = pa.Table.from_batches(batches).column("id").to_pylist()
    assert ids == list(range(5500))
    metadata = reader.schema.metadata
    assert metadata[b"statement_id"]
    assert metadata[b"total_row_count"] == b"5500"
    assert metadata[b"truncated"] == b"false"


async def test_chunks_after_the_first_are_forwarded_as_the_warehouse_wrote_them(
    warehouse: LocalWarehouse, start_service: StartService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches that pass through leave as the warehouse's own messages (no second encoding).
    A first chunk larger than the rows that go ahead alone would be encoded, in two parts."""
    forwarded: list[int] = []
    original = arrow_stream.EncodedBatches.from_arrow_stream

    def counting(
        self: arrow_stream.EncodedBatches, data: bytes, table: pa.Table
    ) -> arrow_stream.Messages | None:
        part = original(self, data, table)
        if part is not None:
            assert all(message.obj is data for message in part.messages)
            forwarded.append(part.rows)
        return part

    monkeypatch.setattr(arrow_stream.EncodedBatches, "from_arrow_stream", counting)
    # A result announced larger than a cache entry: no JSON copy is kept beside the stream.
    client = await start(start_service, warehouse, CACHE_MAX_ENTRY_BYTES="1000")

    response, body = await arrow_query(client, {"sql": "SELECT id FROM range(5500) t(id)"})

    assert response.status == 200
    assert pa.ipc.open_stream(body).read_all().column("id").to_pylist() == list(range(5500))
    # Every chunk, none encoded again (in the order their downloads ended: the window's).
    assert sorted(forwarded) == [500, 1000, 1000, 1000, 1000, 1000]


def ipc_stream(batches: list[pa.RecordBatch], **options: Any) -> bytes:
    sink = pa.BufferOutputStream()
    write_options = pa.ipc.IpcWriteOptions(**options)
    with pa.ipc.new_stream(sink, batches[0].schema, options=write_options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


def test_record_batch_messages_are_views_that_make_the_same_stream_again() -> None:
    batch = pa.record_batch(
        [pa.array([1, None, 3]), pa.array(["a", "b", None]), pa.array([[1], [], None])],
        names=["n", "s", "l"],
    )
    data = ipc_stream([batch, batch.slice(1)])

    messages = arrow_stream.record_batch_messages(data)

    assert messages is not None
    assert len(messages) == 2
    assert all(message.obj is data for message in messages)
    rebuilt = (
        bytes(batch.schema.serialize())
        + b"".join(bytes(m) for m in messages)
        + arrow_stream.END_OF_STREAM
    )
    assert (
        pa.ipc.open_stream(rebuilt)
        .read_all()
        .equals(pa.Table.from_batches([batch, batch.slice(1)]))
    )


@pytest.mark.parametrize(
    "options",
    [{"use_legacy_format": True}, {"metadata_version": pa.ipc.MetadataVersion.V4}],
    ids=["legacy-framing", "metadata-v4"],
)
def test_messages_framed_or_versioned_otherwise_are_not_forwarded(options: dict[str, Any]) -> None:
    batch = pa.record_batch([pa.array([1, 2])], names=["n"])

    assert arrow_stream.record_batch_messages(ipc_stream([batch], **options)) is None


def test_a_dictionary_batch_is_not_forwarded() -> None:
    batch = pa.record_batch([pa.array(["a", "b", "a"]).dictionary_encode()], names=["d"])

    assert arrow_stream.record_batch_messages(ipc_stream([batch])) is None


def test_a_compressed_chunk_is_encoded_again_uncompressed() -> None:
    """A compressed body is not what every reader can read (apache-arrow in JavaScript cannot
    decompress): such a chunk is decoded and its batches encoded again."""
    columns = [Column("n", "LONG", "BIGINT", 0)]
    form = arrow_stream.EncodedBatches(arrow_form.ArrowBatches(columns))
    batch = pa.record_batch([pa.array(list(range(1000)), pa.int64())], names=["n"])
    plain, compressed = ipc_stream([batch]), ipc_stream([batch], compression="lz4")

    forwarded = form.from_arrow_stream(plain, pa.ipc.open_stream(pa.py_buffer(plain)).read_all())
    declined = form.from_arrow_stream(
        compressed, pa.ipc.open_stream(pa.py_buffer(compressed)).read_all()
    )

    assert forwarded is not None
    assert forwarded.rows == 1000
    assert declined is None


def test_an_empty_chunk_is_left_to_from_arrow_which_fixes_the_schema() -> None:
    columns = [Column("n", "LONG", "BIGINT", 0)]
    form = arrow_stream.EncodedBatches(arrow_form.ArrowBatches(columns))
    data = ipc_stream([pa.record_batch([pa.array([], pa.int64())], names=["n"])])

    assert form.from_arrow_stream(data, pa.ipc.open_stream(pa.py_buffer(data)).read_all()) is None


async def test_an_empty_result_is_a_schema_and_no_rows(
    warehouse: LocalWarehouse, start_service: StartService
) -> None:
    client = await start(start_service, warehouse)

    _, body = await arrow_query(
        client, {"sql": "SELECT id, CAST(id AS DECIMAL(5,1)) AS d FROM range(3) t(id) WHERE id > 5"}
    )
    table = pa.ipc.open_stream(body).read_all()

    assert table.num_rows == 0
    assert table.schema.types == [pa.int64(), pa.decimal128(5, 1)]


async def test_arrow_values_equal_the_json_answer_of_the_same_query(
    warehouse: LocalWarehouse, start_service: StartService
) -> None:
    client = await start(start_service, warehouse)
    sql = "SELECT id, CAST(id AS DOUBLE) * 1.5 AS x, CAST(id AS STRING) AS s FROM range(3000) t(id)"

    json_answer = await (await client.post("/api/query", json={"sql": sql})).json()
    _, body = await arrow_query(client, {"sql": sql})

    table = pa.ipc.open_stream(body).read_all()
    assert [list(row.values()) for row in table.to_pylist()] == json_answer["rows"]


async def test_a_named_query_answers_arrow(
    warehouse: LocalWarehouse, start_service: StartService, tmp_path: Path
) -> None:
    (tmp_path / "ids.sql").write_text(
        "-- param: n INT required\nSELECT id FROM range(10) t(id) WHERE id < :n\n"
    )
    client = await start(start_service, warehouse, QUERIES_DIR=str(tmp_path))

    response, body = await arrow_query(client, {"params": {"n": 4}}, path="/api/queries/ids")

    assert response.status == 200
    assert pa.ipc.open_stream(body).read_all().column("id").to_pylist() == [0, 1, 2, 3]


async def test_a_cached_result_answers_arrow_with_the_same_table(
    warehouse: LocalWarehouse, start_service: StartService
) -> None:
    client = await start(start_service, warehouse)
    body = {"sql": EVERY_TYPE_SQL}
    _, fresh = await arrow_query(client, body, **{"Cache-Control": "no-store"})
    stored = await client.post("/api/query", json=body)
    assert stored.status == 200

    response, cached = await arrow_query(client, body)

    assert "cache;desc=hit" in response.headers["Server-Timing"]
    assert response.headers["Content-Type"] == ARROW
    cached_table, fresh_table = (pa.ipc.open_stream(b).read_all() for b in (cached, fresh))
    assert cached_table.schema == fresh_table.schema
    assert python_rows(cached_table) == python_rows(fresh_table)


async def test_an_error_before_the_first_byte_is_the_json_error_envelope(
    warehouse: LocalWarehouse, start_service: StartService
) -> None:
    client = await start(start_service, warehouse)

    response, body = await arrow_query(client, {"sql": "SELECT * FROM no_such_table"})

    assert response.status == 400
    assert orjson.loads(body)["error"]["code"] == "SQL_ERROR"


async def test_a_failure_mid_stream_makes_arrow_readers_and_http_clients_fail(
    warehouse: LocalWarehouse,
) -> None:
    warehouse.faults.add("download", Fault.status(403), times=None, after=5)
    warehouse.faults.add("get_chunk", Fault.status(404), times=None, after=5)
    received = bytearray()
    # The response is closed on leaving its `async with`: a body cut short is never read to
    # its end, so nothing else would give its connection back (left to the garbage collector,
    # it warns "Unclosed connection" in whichever test runs then).
    async with (
        TestServer(make_app(warehouse)) as server,
        aiohttp.ClientSession() as session,
        session.post(
            server.make_url("/api/query"), json={"sql": WIDE_SQL}, headers={"Accept": ARROW}
        ) as response,
    ):
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_into(response, received)

    assert response.status == 200
    with pytest.raises(pa.ArrowInvalid, match="metadata bytes"):
        pa.ipc.open_stream(bytes(received)).read_all()
    envelope = orjson.loads(bytes(received).rsplit(b"\xff\xff\xff\x7f", 1)[1])
    assert envelope["error"]["code"] in ("WAREHOUSE_ERROR", "WAREHOUSE_UNAVAILABLE")
    assert envelope["error"]["request_id"] == response.headers["X-Request-ID"]


async def test_a_slow_reader_holds_the_service_to_a_few_chunks(
    warehouse: LocalWarehouse,
) -> None:
    async with TestServer(make_app(warehouse)) as server, aiohttp.ClientSession() as session:
        response = await session.post(
            server.make_url("/api/query"), json={"sql": WIDE_SQL}, headers={"Accept": ARROW}
        )
        first = await response.content.read(64 * 1024)
        await asyncio.sleep(0.5)  # the reader stalls: nothing more is read meanwhile
        fetched_while_stalled = downloads(warehouse)
        rest = await response.read()

    table = pa.ipc.open_stream(first + rest).read_all()
    assert fetched_while_stalled < CHUNKS // 4
    assert table.num_rows == 100000
    assert downloads(warehouse) == CHUNKS


async def test_chunks_larger_than_a_send_slice_go_out_in_slices(warehouse: LocalWarehouse) -> None:
    sizes: list[int] = []
    parts: list[bytes] = []
    async with TestServer(make_app(warehouse)) as server, aiohttp.ClientSession() as session:
        response = await session.post(
            server.make_url("/api/query"), json={"sql": WIDE_SQL}, headers={"Accept": ARROW}
        )
        size = 0
        async for data, end_of_http_chunk in response.content.iter_chunks():
            parts.append(data)
            size += len(data)
            if end_of_http_chunk:
                sizes.append(size)
                size = 0

    table = pa.ipc.open_stream(b"".join(parts)).read_all()
    assert table.num_rows == 100000
    assert table.column("id").to_pylist() == list(range(100000))
    # Each warehouse chunk (1,000 rows of about 1 KB) is larger than a slice.
    assert max(sizes) == SEND_SLICE_BYTES
    assert len(sizes) > CHUNKS * 4


async def test_a_client_leaving_mid_stream_stops_the_downloads(warehouse: LocalWarehouse) -> None:
    async with TestServer(make_app(warehouse)) as server:
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                server.make_url("/api/query"), json={"sql": WIDE_SQL}, headers={"Accept": ARROW}
            )
            await response.content.read(64 * 1024)
            response.close()  # the client goes away mid-stream
        await asyncio.sleep(0.3)
        after_leaving = downloads(warehouse)
        await asyncio.sleep(0.3)

    assert after_leaving < CHUNKS
    assert downloads(warehouse) == after_leaving
