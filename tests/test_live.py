"""A streamed result's shared JSON copy: made only of a result that may fit an entry."""

from __future__ import annotations

import orjson
import pytest

from dbx_backend.engine.live import TeeLimits, cannot_fit

LIMITS = TeeLimits(max_rows=100, max_bytes=1000)


@pytest.mark.parametrize(
    ("rows", "width", "expected"),
    [
        pytest.param(None, 3, False, id="size-not-announced"),
        pytest.param(100, 1, False, id="rows-at-the-cap"),
        pytest.param(101, 1, True, id="more-rows-than-the-cap"),
        # 3 columns: at least `[1,2,3]` (7 bytes) per row and a comma between rows: 125 rows
        # take 999 bytes at the least, 126 take 1007.
        pytest.param(125, 3, False, id="least-bytes-just-fit"),
        pytest.param(126, 3, True, id="least-bytes-over"),
        pytest.param(0, 7, False, id="empty"),
    ],
)
def test_a_copy_is_skipped_only_when_the_result_cannot_fit(
    rows: int | None, width: int, expected: bool
) -> None:
    limits = TeeLimits(max_rows=200, max_bytes=1000) if width == 3 else LIMITS
    assert cannot_fit(rows, width, limits) is expected


def test_the_least_bytes_are_what_the_smallest_rows_take() -> None:
    rows = [[1, 2, 3]] * 125
    body = orjson.dumps(rows)[1:-1]  # the rows as the JSON answer writes them

    assert not cannot_fit(125, 3, TeeLimits(max_rows=200, max_bytes=len(body)))
    assert cannot_fit(125, 3, TeeLimits(max_rows=200, max_bytes=len(body) - 1))
