"""EXTERNAL_LINKS: downloads in three formats from presigned-style links (reference §9)."""

from __future__ import annotations

import csv
import io
from typing import Any

import aiohttp
import orjson
import pyarrow as pa
import pytest

from tests.conftest import FakeClock
from tests.localwarehouse.conftest import Api, StartWarehouse

QUERY = "SELECT id, CASE WHEN id % 3 = 0 THEN NULL ELSE 'v' || id END AS label FROM range(25) t(id)"


def decode(fmt: str, index: int, data: bytes) -> list[list[Any]]:
    """Rows of one downloaded chunk as text (NULL as None)."""
    if fmt == "JSON_ARRAY":
        return [list(row) for row in orjson.loads(data)]
    if fmt == "CSV":
        rows = list(csv.reader(io.StringIO(data.decode())))
        if index == 0:
            assert rows.pop(0) == ["id", "label"]
        return [[None if v == "null" else v for v in row] for row in rows]
    table = pa.ipc.open_stream(data).read_all()
    return [[str(r["id"]), r["label"]] for r in table.to_pylist()]


async def download_all(api: Api, first: dict[str, Any]) -> list[list[Any]]:
    """Follow the links chunk by chunk with a bare session, as clients must (no auth header)."""
    fmt = first["manifest"]["format"]
    rows: list[list[Any]] = []
    links = first["result"]["external_links"]
    async with aiohttp.ClientSession() as bare:
        for _ in range(first["manifest"]["total_chunk_count"]):
            link = links[0]
            assert link["row_offset"] == len(rows)
            async with bare.get(link["external_link"]) as response:
                assert response.status == 200
                chunk_rows = decode(fmt, link["chunk_index"], await response.read())
                assert len(chunk_rows) == link["row_count"]
                assert response.content_length == link["byte_count"]
            rows.extend(chunk_rows)
            if "next_chunk_index" not in link:
                break
            links = (await api.chunk(first["statement_id"], link["next_chunk_index"]))[
                "external_links"
            ]
    return rows


@pytest.mark.parametrize("fmt", ["JSON_ARRAY", "CSV", "ARROW_STREAM"])
async def test_each_format_downloads_every_row_chunk_by_chunk(
    start_warehouse: StartWarehouse, fmt: str
) -> None:
    api = await start_warehouse(chunk_rows=10)

    first = await api.execute(QUERY, disposition="EXTERNAL_LINKS", format=fmt)
    rows = await download_all(api, first)

    manifest = first["manifest"]
    assert (manifest["total_chunk_count"], manifest["total_row_count"]) == (3, 25)
    assert manifest["total_byte_count"] == sum(c["byte_count"] for c in manifest["chunks"])
    assert rows == [[str(i), None if i % 3 == 0 else f"v{i}"] for i in range(25)]


async def test_arrow_chunks_keep_the_column_types(api: Api) -> None:
    first = await api.execute(
        "SELECT CAST(1.5 AS DECIMAL(10,2)) AS d, DATE'2020-01-01' AS day",
        disposition="EXTERNAL_LINKS",
        format="ARROW_STREAM",
    )

    async with aiohttp.ClientSession() as bare:
        link = first["result"]["external_links"][0]["external_link"]
        table = pa.ipc.open_stream(await (await bare.get(link)).read()).read_all()

    assert table.schema.field("d").type == pa.decimal128(10, 2)
    assert table.schema.field("day").type == pa.date32()


async def test_types_reported_as_string_arrive_as_their_text_in_arrow_chunks(api: Api) -> None:
    sql = "SELECT TIME '04:05:06' AS t, uuid '8c2d7f42-0d4c-4a83-bd1d-7a7c1d7a1f5e' AS u"
    arrow = await api.execute(sql, disposition="EXTERNAL_LINKS", format="ARROW_STREAM")
    text = await api.execute(sql, disposition="EXTERNAL_LINKS", format="JSON_ARRAY")

    async with aiohttp.ClientSession() as bare:
        link = arrow["result"]["external_links"][0]["external_link"]
        table = pa.ipc.open_stream(await (await bare.get(link)).read()).read_all()
        json_link = text["result"]["external_links"][0]["external_link"]
        cells = orjson.loads(await (await bare.get(json_link)).read())

    assert [c["type_name"] for c in arrow["manifest"]["schema"]["columns"]] == ["STRING"] * 2
    assert table.schema.types == [pa.string(), pa.string()]
    assert [list(row.values()) for row in table.to_pylist()] == cells


async def test_a_download_carrying_authorization_is_400_like_s3(api: Api) -> None:
    first = await api.execute("SELECT 1", disposition="EXTERNAL_LINKS")
    link = first["result"]["external_links"][0]["external_link"]

    response = await api.session.get(link)  # this session adds the bearer token
    text = await response.text()

    assert response.status == 400
    assert "<Code>InvalidArgument</Code>" in text


async def test_the_advertised_headers_are_required(start_warehouse: StartWarehouse) -> None:
    headers = {"x-amz-server-side-encryption-customer-key": "k3y"}
    api = await start_warehouse(link_headers=headers)
    first = await api.execute("SELECT 1", disposition="EXTERNAL_LINKS")
    link = first["result"]["external_links"][0]

    async with aiohttp.ClientSession() as bare:
        without = await bare.get(link["external_link"])
        with_headers = await bare.get(link["external_link"], headers=link["http_headers"])

    assert link["http_headers"] == headers
    assert (without.status, with_headers.status) == (403, 200)


async def test_an_expired_link_is_403_and_a_new_chunk_request_mints_a_fresh_one(
    start_warehouse: StartWarehouse, clock: FakeClock
) -> None:
    api = await start_warehouse(clock=clock, link_expiry_s=900)
    first = await api.execute("SELECT 1", disposition="EXTERNAL_LINKS")
    old = first["result"]["external_links"][0]

    clock.advance(901)
    fresh = (await api.chunk(first["statement_id"], 0))["external_links"][0]
    async with aiohttp.ClientSession() as bare:
        expired = await bare.get(old["external_link"])
        renewed = await bare.get(fresh["external_link"])

    assert expired.status == 403
    assert "Request has expired" in await expired.text()
    assert renewed.status == 200
    assert fresh["expiration"] > old["expiration"]
    assert old["expiration"].endswith("Z")


async def test_a_tampered_link_is_403(api: Api) -> None:
    first = await api.execute("SELECT 1", disposition="EXTERNAL_LINKS")
    link = first["result"]["external_links"][0]["external_link"]

    async with aiohttp.ClientSession() as bare:
        response = await bare.get(link.replace("/0?", "/1?"))

    assert response.status == 403
