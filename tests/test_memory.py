"""The memory budget: reservations, waits in order, refusals, the cache giving way, estimates;
and the buffered answer's writer, byte for byte what encoding the whole result gives."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest

from dbx_backend.engine.cache_store import CacheEntry, MemoryStore, strong_etag
from dbx_backend.engine.json_answer import EncodedJsonRows, JsonAnswerWriter
from dbx_backend.engine.memory import Estimator, MemoryBudget, MemoryBusy, Reservation
from dbx_backend.engine.normalize import Column, RowConverter
from dbx_backend.warehouse.errors import ProtocolError

SHORT_WAIT_S = 0.02


def entry(size: int) -> CacheEntry:
    return CacheEntry.create(
        b"x" * size, stored_at=0.0, ttl_s=60.0, stale_s=0.0, row_count=1, statement_id="s"
    )


async def test_a_reservation_takes_its_bytes_and_release_gives_them_back() -> None:
    budget = MemoryBudget(1000, wait_s=SHORT_WAIT_S)

    reservation = await budget.reserve(300)
    assert (reservation.nbytes, budget.reserved, budget.free) == (300, 300, 700)

    reservation.release()
    reservation.release()  # idempotent
    assert (budget.reserved, budget.free) == (0, 1000)


async def test_a_reservation_larger_than_the_budget_holds_the_whole_budget() -> None:
    budget = MemoryBudget(1000, wait_s=SHORT_WAIT_S)

    reservation = await budget.reserve(5000)

    assert reservation.nbytes == budget.total == budget.reserved


async def test_without_room_a_reservation_is_refused_after_the_wait() -> None:
    budget = MemoryBudget(1000, wait_s=SHORT_WAIT_S)
    await budget.reserve(800)

    with pytest.raises(MemoryBusy) as refused:
        await budget.reserve(300)

    assert refused.value.waited_s >= SHORT_WAIT_S
    assert refused.value.retry_after > 0
    assert (budget.stats.waits, budget.stats.refusals, budget.reserved) == (1, 1, 800)


async def test_a_waiting_reservation_gets_the_room_a_release_frees() -> None:
    budget = MemoryBudget(1000, wait_s=5.0)
    holder = await budget.reserve(800)
    waiting = asyncio.create_task(budget.reserve(300))
    await asyncio.sleep(0)
    assert not waiting.done()

    holder.release()
    reservation = await waiting

    assert (reservation.nbytes, budget.reserved, budget.stats.waits) == (300, 300, 1)


async def test_waiting_reservations_are_served_in_order() -> None:
    budget = MemoryBudget(1000, wait_s=5.0)
    holder = await budget.reserve(1000)
    granted: list[str] = []

    async def reserve(name: str, nbytes: int) -> Reservation:
        reservation = await budget.reserve(nbytes)
        granted.append(name)
        return reservation

    big = asyncio.create_task(reserve("big", 900))
    await asyncio.sleep(0)
    small = asyncio.create_task(reserve("small", 100))
    await asyncio.sleep(0)
    holder.shrink_to(900)  # 100 free: the small one fits, but the big one came first
    await asyncio.sleep(0)
    assert granted == []

    holder.release()
    (await big).release()
    await small

    assert granted == ["big", "small"]


async def test_a_growing_reservation_goes_before_new_ones() -> None:
    budget = MemoryBudget(1000, wait_s=5.0)
    growing = await budget.reserve(500)
    holder = await budget.reserve(500)
    new = asyncio.create_task(budget.reserve(300))
    await asyncio.sleep(0)
    grow = asyncio.create_task(growing.grow_to(800))
    await asyncio.sleep(0)

    holder.release()
    await grow
    await asyncio.sleep(0)

    assert growing.nbytes == 800
    assert not new.done()
    assert budget.stats.growths == 1
    growing.release()
    assert (await new).nbytes == 300


async def test_reservations_never_add_up_to_more_than_the_budget() -> None:
    budget = MemoryBudget(10_000, wait_s=5.0)
    store = MemoryStore(8_000, 4_000, budget=budget, clock=lambda: 0.0)
    rng = random.Random(13)  # noqa: S311 - a reproducible load, not a secret
    highest = 0

    def observe() -> None:
        nonlocal highest
        highest = max(highest, budget.reserved + budget.cached)

    async def answer(index: int) -> None:
        reservation = await budget.reserve(rng.randint(100, 4_000))
        try:
            for _ in range(rng.randint(0, 3)):
                observe()
                await asyncio.sleep(0)
            await reservation.grow_to(reservation.nbytes + rng.randint(0, 2_000))
            observe()
            store.put(f"key-{index}", entry(rng.randint(100, 3_000)), keep_s=60.0)
            observe()
            await asyncio.sleep(0)
        except MemoryBusy:
            pass  # a growth nobody could ever serve is refused at once
        finally:
            reservation.release()

    await asyncio.gather(*(answer(i) for i in range(200)))

    assert highest <= budget.total
    assert budget.reserved == 0
    assert budget.cached == store.stats.bytes_held
    assert budget.stats.waits > 0  # the budget was full at times: this run tested something


async def test_a_growth_that_nobody_could_serve_is_refused_at_once() -> None:
    budget = MemoryBudget(1000, wait_s=60.0)
    first, second = await budget.reserve(500), await budget.reserve(500)
    growing = asyncio.create_task(first.grow_to(700))
    await asyncio.sleep(0)

    with pytest.raises(MemoryBusy):
        await second.grow_to(700)  # both hold everything and wait for more: a deadlock

    second.release()
    await growing
    assert first.nbytes == 700


async def test_the_cache_gives_way_least_recently_used_first() -> None:
    budget = MemoryBudget(10_000, wait_s=SHORT_WAIT_S)
    store = MemoryStore(10_000, 5_000, budget=budget, clock=lambda: 0.0)
    for key in ("old", "used", "new"):
        assert store.put(key, entry(3_000), keep_s=60.0)
    store.get("old")  # now the most recently used

    await budget.reserve(2_000)

    assert store.get("used") is None
    assert store.get("old") is not None
    assert store.get("new") is not None
    assert budget.cached == store.stats.bytes_held == 2 * entry(3_000).size


async def test_the_cache_stores_nothing_while_an_answer_waits() -> None:
    budget = MemoryBudget(10_000, wait_s=5.0)
    store = MemoryStore(10_000, 5_000, budget=budget, clock=lambda: 0.0)
    holder = await budget.reserve(9_000)
    waiting = asyncio.create_task(budget.reserve(5_000))
    await asyncio.sleep(0)

    assert not store.put("key", entry(100), keep_s=60.0)

    holder.release()
    await waiting
    assert store.put("key", entry(100), keep_s=60.0)


def test_an_entry_that_cannot_fit_evicts_nothing() -> None:
    budget = MemoryBudget(10_000, wait_s=SHORT_WAIT_S)
    store = MemoryStore(20_000, 20_000, budget=budget, clock=lambda: 0.0)
    assert store.put("kept", entry(3_000), keep_s=60.0)

    assert not store.put("huge", entry(12_000), keep_s=60.0)

    assert store.get("kept") is not None


def test_estimates_follow_what_answers_measured() -> None:
    estimator = Estimator()
    first = estimator.body_bytes("ARROW_STREAM", byte_count=1_000_000, row_count=0, columns=0)

    for _ in range(20):
        estimator.learn(
            "ARROW_STREAM", byte_count=1_000_000, row_count=100, columns=1, body_bytes=3_000_000
        )

    later = estimator.body_bytes("ARROW_STREAM", byte_count=1_000_000, row_count=0, columns=0)
    assert first < later <= 3_000_000
    assert later > 2_900_000


def test_without_a_byte_count_the_estimate_is_per_value() -> None:
    estimator = Estimator()
    for _ in range(20):
        estimator.learn("JSON_ARRAY", byte_count=0, row_count=10_000, columns=10, body_bytes=10**6)

    estimate = estimator.body_bytes("JSON_ARRAY", byte_count=0, row_count=20_000, columns=10)
    assert 1.9 * 10**6 < estimate <= 2.1 * 10**6


# -- the buffered answer's writer -------------------------------------------------------------

COLUMNS = [
    Column(name="id", type="LONG", type_text="BIGINT", position=0),
    Column(name="name", type="STRING", type_text="STRING", position=1),
    Column(name="amount", type="DECIMAL", type_text="DECIMAL(10,2)", position=2, scale=2),
    Column(name="day", type="DATE", type_text="DATE", position=3),
    Column(name="ratio", type="DOUBLE", type_text="DOUBLE", position=4),
    Column(name="flag", type="BOOLEAN", type_text="BOOLEAN", position=5),
]


def cells(count: int, start: int = 0) -> list[Any]:
    return [
        [str(i), f"row \u00e9 {i}", f"{i}.5", "2024-02-29", "NaN" if i % 7 else "1.25", None]
        for i in range(start, start + count)
    ]


def whole_answer(rows: list[Any], truncated: bool, statement_id: str) -> tuple[bytes, str]:
    """What encoding the whole result at once gives (the answer's contract)."""
    content = orjson.dumps(
        {
            "columns": [c.to_json() for c in COLUMNS],
            "rows": rows,
            "row_count": len(rows),
            "truncated": truncated,
        }
    )
    body = content[:-1] + b',"statement_id":' + orjson.dumps(statement_id) + b"}"
    return body, strong_etag(content)


def written(chunks: list[list[Any]], *, max_rows: int | None = None) -> tuple[bytes, str]:
    form = EncodedJsonRows(RowConverter(COLUMNS), slice_rows=3)
    writer = JsonAnswerWriter(COLUMNS, max_rows=max_rows, max_bytes=None)
    for chunk in chunks:
        writer.append(form.from_cells(chunk))
        if writer.full:
            break
    return writer.finish("01f0-statement")


@pytest.mark.parametrize(
    "sizes", [[], [0], [1], [10], [4, 0, 7, 3], [2, 2, 2]], ids=lambda s: f"chunks{s}"
)
def test_the_body_is_what_encoding_the_whole_result_gives(sizes: list[int]) -> None:
    chunks, start = [], 0
    for size in sizes:
        chunks.append(cells(size, start))
        start += size
    rows = RowConverter(COLUMNS).convert_rows(cells(start))

    assert written(chunks) == whole_answer(rows, False, "01f0-statement")


def test_the_row_cap_truncates_inside_a_chunk() -> None:
    rows = RowConverter(COLUMNS).convert_rows(cells(5))

    assert written([cells(4), cells(4, 4)], max_rows=5) == whole_answer(
        rows, True, "01f0-statement"
    )


def test_the_byte_cap_keeps_the_rows_that_fit() -> None:
    form = EncodedJsonRows(RowConverter(COLUMNS))
    writer = JsonAnswerWriter(COLUMNS, max_rows=None, max_bytes=2_000)

    writer.append(form.from_cells(cells(1_000)))
    body, _ = writer.finish("s")

    answer = orjson.loads(body)
    assert answer["truncated"] is True
    assert writer.cut_at_bytes
    assert 0 < answer["row_count"] == len(answer["rows"]) < 1_000
    assert len(body) <= 2_000 + 100  # the end of the body is outside the cap


def test_a_malformed_row_is_named_by_its_place_in_the_chunk() -> None:
    chunk = cells(10)
    chunk[8] = chunk[8][:3]
    form = EncodedJsonRows(RowConverter(COLUMNS), slice_rows=3)

    with pytest.raises(ProtocolError, match="row 8 of a chunk has 3 cells"):
        form.from_cells(chunk)
