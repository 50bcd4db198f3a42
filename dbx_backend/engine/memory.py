"""The process's memory budget (`MEMORY_BUDGET_MB`): buffered answers in flight, streams'
windows and the in-process result cache share it.

* A buffered answer reserves its expected size once the statement's manifest is known,
  before it reads a chunk (`Estimator`: the manifest's byte and row counts times the
  expansion measured for that result format), grows the reservation when the estimate was
  low, and releases it once its body is sent.
* A stream reserves its window (the chunks it holds at once) for as long as it runs.
* The cache holds what it stores and gives way first: a reservation that does not fit makes
  it evict least recently used entries before it waits, and it stores nothing while others
  wait.
* A reservation waits up to `MEMORY_WAIT_S`, in arrival order (growing ones before new ones),
  then fails with `MemoryBusy`. Reservations never add up to more than the budget.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

# Retry-After of a refusal: reservations are released as bodies are sent, within seconds.
RETRY_AFTER_S = 2.0


class MemoryBusy(Exception):
    """The memory budget had no room for this request within `MEMORY_WAIT_S`."""

    retry_after = RETRY_AFTER_S

    def __init__(self, message: str, *, waited_s: float) -> None:
        super().__init__(message)
        self.message = message
        self.waited_s = waited_s
        self.statement_id: str | None = None  # the statement it would have read (cancelled)


class Reclaimer(Protocol):
    """What holds memory it can give back at once (the result cache)."""

    def reclaim(self, nbytes: int) -> int:
        """Free at least `nbytes` if it can, least valuable first; the bytes freed."""
        ...


class BudgetObserver(Protocol):
    """Hears what the budget did (metrics)."""

    def memory_waited(self) -> None: ...

    def memory_refused(self) -> None: ...

    def memory_truncated(self) -> None: ...


@dataclass(slots=True)
class BudgetStats:
    """What the budget did since start."""

    waits: int = 0
    refusals: int = 0
    truncations: int = 0
    growths: int = 0  # reservations grown past their estimate


class _GaveUp(Exception):
    """A growing reservation nobody could ever serve: all that is reserved waits to grow."""


@dataclass(eq=False, slots=True)
class _Waiter:
    reservation: Reservation
    nbytes: int  # the reservation's size once granted
    previous: int  # and before
    granted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class MemoryBudget:
    """Bytes held at once by answers, streams and the cache, bounded by `total`."""

    def __init__(
        self,
        total: int,
        *,
        wait_s: float,
        clock: Callable[[], float] = time.monotonic,
        observer: BudgetObserver | None = None,
    ) -> None:
        self.total = total
        self.wait_s = wait_s
        self.clock = clock
        self.observer = observer
        self.reserved = 0  # buffered answers and streams
        self.cached = 0  # the result cache's entries
        self.stats = BudgetStats()
        self.estimator = Estimator()
        self._reclaimer: Reclaimer | None = None
        self._reclaiming = False
        self._urgent: collections.deque[_Waiter] = collections.deque()  # growing
        self._waiting: collections.deque[_Waiter] = collections.deque()  # new

    @property
    def free(self) -> int:
        """Bytes nobody holds."""
        return self.total - self.reserved - self.cached

    @property
    def waiting(self) -> bool:
        """True while a reservation waits for room."""
        return bool(self._urgent or self._waiting)

    def give_way_with(self, reclaimer: Reclaimer) -> None:
        """The cache: asked to evict when a reservation does not fit."""
        self._reclaimer = reclaimer

    # -- answers and streams ----------------------------------------------------------------

    async def reserve(self, nbytes: int) -> Reservation:
        """A reservation of `nbytes` (at most the whole budget); MemoryBusy after waiting
        `wait_s` for room."""
        reservation = Reservation(self)
        await self._resize(reservation, min(max(0, nbytes), self.total), urgent=False)
        return reservation

    async def _resize(self, reservation: Reservation, nbytes: int, *, urgent: bool) -> None:
        if nbytes <= reservation.nbytes:
            return
        queue = self._urgent if urgent else self._waiting
        # Nobody overtakes a waiter of its own rank; growing ones overtake new ones.
        ahead = self._urgent or (not urgent and self._waiting)
        if not ahead and self._fits(nbytes, reservation):
            self._grant(reservation, nbytes)
            return
        waiter = _Waiter(reservation, nbytes, reservation.nbytes)
        queue.append(waiter)
        started = self.clock()
        if urgent:
            self._break_deadlock()
        if not waiter.granted.done():
            self.stats.waits += 1
            if self.observer is not None:
                self.observer.memory_waited()
        try:
            async with asyncio.timeout(self.wait_s):
                await asyncio.shield(waiter.granted)
        except _GaveUp:
            raise self._refused(started) from None
        except TimeoutError:
            self._withdraw(waiter, queue)
            raise self._refused(started) from None
        except BaseException:
            self._withdraw(waiter, queue)
            raise
        finally:
            reservation.waited_s += self.clock() - started

    def _break_deadlock(self) -> None:
        """When everything reserved waits to grow and the first of them cannot, nobody will
        ever release: the newest grower gives up (its owner then releases what it holds)."""
        if not self._urgent or self._fits(self._urgent[0].nbytes, self._urgent[0].reservation):
            return
        if sum(w.reservation.nbytes for w in self._urgent) >= self.reserved:
            self._urgent.pop().granted.set_exception(_GaveUp())

    def _refused(self, started: float) -> MemoryBusy:
        self.stats.refusals += 1
        if self.observer is not None:
            self.observer.memory_refused()
        return MemoryBusy(
            "the service is busy: its memory budget (MEMORY_BUDGET_MB) stays full; "
            "retry shortly, or ask for a streamed format (NDJSON or CSV)",
            waited_s=self.clock() - started,
        )

    def _withdraw(self, waiter: _Waiter, queue: collections.deque[_Waiter]) -> None:
        """A waiter that leaves: out of its queue, or, granted meanwhile, its grant undone."""
        if not waiter.granted.done():
            waiter.granted.cancel()
            queue.remove(waiter)
            self._wake()  # the head may have blocked those behind it
        elif not waiter.granted.cancelled() and waiter.granted.exception() is None:
            self._shrink(waiter.reservation, waiter.reservation.nbytes - waiter.previous)

    def _fits(self, nbytes: int, reservation: Reservation) -> bool:
        """True when growing `reservation` to `nbytes` fits, once the cache gave way."""
        needed = nbytes - reservation.nbytes
        if needed > self.free and self._reclaimer is not None and self.cached:
            self._reclaiming = True  # what the cache frees goes to this one, not to a wake-up
            try:
                self._reclaimer.reclaim(needed - self.free)
            finally:
                self._reclaiming = False
        return needed <= self.free

    def _grant(self, reservation: Reservation, nbytes: int) -> None:
        self.reserved += nbytes - reservation.nbytes
        reservation.nbytes = nbytes

    def _shrink(self, reservation: Reservation, nbytes: int) -> None:
        nbytes = min(nbytes, reservation.nbytes)
        if nbytes <= 0:
            return
        reservation.nbytes -= nbytes
        self.reserved -= nbytes
        self._wake()

    def _wake(self) -> None:
        """Grant waiters in order, growing ones first, while they fit."""
        for queue in (self._urgent, self._waiting):
            while queue:
                head = queue[0]
                if not self._fits(head.nbytes, head.reservation):
                    self._break_deadlock()
                    return  # in order: nobody overtakes the head
                queue.popleft()
                self._grant(head.reservation, head.nbytes)
                head.granted.set_result(None)

    # -- the cache ---------------------------------------------------------------------------

    def hold_for_cache(self, nbytes: int) -> bool:
        """Room for an entry the cache wants to store; never while a reservation waits."""
        if self.waiting or nbytes > self.free:
            return False
        self.cached += nbytes
        return True

    def release_from_cache(self, nbytes: int) -> None:
        """An entry left the cache."""
        self.cached -= nbytes
        if nbytes > 0 and not self._reclaiming:
            self._wake()

    def note_truncated(self) -> None:
        """An answer larger than the whole budget was cut at it."""
        self.stats.truncations += 1
        if self.observer is not None:
            self.observer.memory_truncated()


class Reservation:
    """Bytes one answer or stream holds in the budget; `release` is idempotent."""

    __slots__ = ("budget", "nbytes", "waited_s")

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.nbytes = 0
        self.waited_s = 0.0

    async def grow_to(self, nbytes: int) -> None:
        """Hold `nbytes` (at most the whole budget), waiting as `reserve` does."""
        budget = self.budget
        nbytes = min(nbytes, budget.total)
        if nbytes > self.nbytes:
            budget.stats.growths += 1
            await budget._resize(self, nbytes, urgent=True)

    def shrink_to(self, nbytes: int) -> None:
        """Hold no more than `nbytes` (an estimate that was high gives the rest back)."""
        self.budget._shrink(self, self.nbytes - max(0, nbytes))

    def release(self) -> None:
        """Give everything back."""
        self.budget._shrink(self, self.nbytes)


@contextmanager
def released_on_error(reservation: Reservation | None) -> Iterator[None]:
    """Give `reservation` back when what it was taken for fails (or is cancelled); whoever
    sends what it holds releases it otherwise."""
    try:
        yield
    except BaseException:
        if reservation is not None:
            reservation.release()
        raise


# What a buffered answer's body weighs per byte of the warehouse's result before any answer
# was measured (bench/memory.py, seven mixed columns): about as much as the JSON_ARRAY text
# (numbers lose their quotes, timestamps gain a zone), half as much again as Arrow's binary.
INITIAL_EXPANSION = {"JSON_ARRAY": 1.0, "ARROW_STREAM": 1.5}
DEFAULT_EXPANSION = 2.0
# Bytes per value when the manifest gives no byte count (INLINE results): a first guess,
# then what answers measured (about 12 for the bench's columns).
INITIAL_BYTES_PER_VALUE = 16.0
# How fast a measured figure follows new answers (exponentially weighted).
LEARNING_RATE = 0.25
# Answers smaller than this teach nothing: their size is mostly the columns' description.
LEARN_FROM_BYTES = 64 * 1024


class Estimator:
    """Expected body sizes, from the manifest and what earlier answers measured: bytes per
    byte of each result format, and bytes per value when the manifest gives no byte count."""

    def __init__(self) -> None:
        self.expansion: dict[str, float] = dict(INITIAL_EXPANSION)
        self.bytes_per_value = INITIAL_BYTES_PER_VALUE

    def body_bytes(
        self, result_format: str, *, byte_count: int, row_count: int, columns: int
    ) -> int:
        """The expected size of a JSON answer of this result."""
        if byte_count > 0:
            return int(byte_count * self.expansion.get(result_format, DEFAULT_EXPANSION))
        return int(row_count * max(1, columns) * self.bytes_per_value)

    def learn(
        self, result_format: str, *, byte_count: int, row_count: int, columns: int, body_bytes: int
    ) -> None:
        """An answer's real size: the figure its estimate used moves towards it."""
        if body_bytes < LEARN_FROM_BYTES:
            return
        if byte_count > 0:
            known = self.expansion.get(result_format, DEFAULT_EXPANSION)
            seen = body_bytes / byte_count
            self.expansion[result_format] = known + LEARNING_RATE * (seen - known)
        elif row_count > 0:
            seen = body_bytes / (row_count * max(1, columns))
            self.bytes_per_value += LEARNING_RATE * (seen - self.bytes_per_value)
