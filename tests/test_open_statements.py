"""The open-statements budget on its own: reservations, releases, and the bounded check."""

from __future__ import annotations

import pytest

from dbx_backend.engine.open_statements import CheckPolicy, OpenStatements, TooManyStatements
from tests.conftest import FakeClock

POLICY = CheckPolicy(interval_s=1.0, idle_s=60.0, max_lookups=2, lookup_timeout_s=1.0)


def budget(clock: FakeClock, limit: int = 2) -> OpenStatements:
    return OpenStatements(limit, max_age_s=3600.0, policy=POLICY, clock=clock)


def open_one(statements: OpenStatements, caller: str, statement_id: str) -> None:
    with statements.reserve(caller) as keep:
        keep(statement_id)


def test_a_submit_in_progress_holds_a_slot_and_gives_it_back_unless_kept(
    clock: FakeClock,
) -> None:
    statements = budget(clock, limit=1)

    with statements.reserve("a"):
        during = statements.count("a")
        with pytest.raises(TooManyStatements, match="MAX_OPEN_STATEMENTS"), statements.reserve("a"):
            pass

    assert during == 1
    assert statements.count("a") == 0


def test_a_kept_statement_holds_its_slot_after_the_submit(clock: FakeClock) -> None:
    statements = budget(clock, limit=1)

    open_one(statements, "a", "s1")

    assert statements.count("a") == 1
    with pytest.raises(TooManyStatements):
        open_one(statements, "a", "s2")
    assert statements.count("b") == 0


@pytest.mark.parametrize(
    ("state", "held"),
    [
        ("RUNNING", 1),
        ("PENDING", 1),
        ("SUCCEEDED", 0),
        ("FAILED", 0),
        ("CANCELED", 0),
        ("CLOSED", 0),
        (None, 0),
    ],
)
def test_only_a_final_state_or_a_forgotten_statement_frees_the_slot(
    clock: FakeClock, state: str | None, held: int
) -> None:
    statements = budget(clock)
    open_one(statements, "a", "s1")

    statements.observe("a", "s1", state)

    assert statements.count("a") == held


def test_another_callers_poll_frees_nothing(clock: FakeClock) -> None:
    statements = budget(clock)
    open_one(statements, "a", "s1")

    statements.release("b", "s1")

    assert statements.count("a") == 1


async def test_the_check_looks_up_only_idle_statements_oldest_first_and_at_most_a_few(
    clock: FakeClock,
) -> None:
    statements = budget(clock, limit=10)
    for n in range(4):
        open_one(statements, "a", f"s{n}")
        clock.now += 1
    statements.observe("a", "s0", "RUNNING")  # heard of just now: not idle
    clock.now += 60
    asked: list[str] = []

    async def state_of(statement_id: str) -> str | None:
        asked.append(statement_id)
        return "SUCCEEDED"

    freed = await statements.check_once(state_of)

    assert asked == ["s1", "s2"]
    assert freed == 2
    assert statements.count("a") == 2


async def test_the_check_keeps_a_slot_it_could_not_look_up(clock: FakeClock) -> None:
    statements = budget(clock)
    open_one(statements, "a", "s1")
    clock.now += 61

    async def state_of(statement_id: str) -> str | None:
        raise OSError("the warehouse is down")

    freed = await statements.check_once(state_of)

    assert (freed, statements.count("a")) == (0, 1)


async def test_a_statement_whose_handle_expired_is_freed_without_asking(clock: FakeClock) -> None:
    statements = budget(clock)
    open_one(statements, "a", "s1")
    clock.now += 3600

    async def state_of(statement_id: str) -> str | None:
        raise AssertionError("no lookup needed")

    freed = await statements.check_once(state_of)

    assert (freed, statements.count("a")) == (1, 0)
