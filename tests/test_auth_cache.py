"""auth.LoadingCache: one load per key however many callers miss together, busy entries
reloaded before they expire, and nothing served past its ttl (issue 11: the PostgreSQL p99)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from tokensvc import auth
from tokensvc.auth import LoadingCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(auth, "time", SimpleNamespace(monotonic=c))  # auth's clock only, not the loop's
    return c


class Loader:
    """A load that counts its calls and answers when released (or at once)."""

    def __init__(self, *, gated: bool = False) -> None:
        self.calls = 0
        self.value: Any = "v1"
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = asyncio.Event() if gated else None

    async def __call__(self, key: str) -> Any:
        self.calls += 1
        value = self.value  # what the database held when the load began
        if self.gate is not None:
            await self.gate.wait()
        else:
            await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return f"{key}:{value}"


async def settle() -> None:
    """A few turns of the loop: started tasks run, and finish when nothing holds them."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_callers_that_miss_together_share_one_load(clock: Clock) -> None:
    async def main() -> None:
        load = Loader(gated=True)
        cache = LoadingCache(1.0, load)
        waiting = [asyncio.ensure_future(cache.fetch("k")) for _ in range(64)]
        await settle()
        load.gate.set()  # type: ignore[union-attr]  # gated=True
        assert await asyncio.gather(*waiting) == ["k:v1"] * 64
        assert load.calls == 1
        assert await cache.fetch("k") == "k:v1" and load.calls == 1  # cached now

    asyncio.run(main())


def test_a_busy_entry_is_reloaded_in_the_background_before_it_expires(clock: Clock) -> None:
    async def main() -> None:
        load = Loader()
        cache = LoadingCache(1.0, load)
        assert await cache.fetch("k") == "k:v1"
        load.value = "v2"
        clock.now += 0.4
        assert await cache.fetch("k") == "k:v1" and load.calls == 1  # young: no reload
        clock.now += 0.2
        assert await cache.fetch("k") == "k:v1"  # old: served at once, reloaded behind it
        assert await cache.fetch("k") == "k:v1"
        await settle()
        assert load.calls == 2  # one reload for both
        assert await cache.fetch("k") == "k:v2" and load.calls == 2

    asyncio.run(main())


def test_an_entry_is_never_served_past_its_ttl(clock: Clock) -> None:
    async def main() -> None:
        load = Loader()
        cache = LoadingCache(1.0, load)
        assert await cache.fetch("k") == "k:v1"
        load.value = "v2"
        clock.now += 1.0
        assert await cache.fetch("k") == "k:v2"  # waited for the load
        assert load.calls == 2

    asyncio.run(main())


def test_a_load_under_way_when_cleared_stores_nothing(clock: Clock) -> None:
    async def main() -> None:
        load = Loader(gated=True)
        cache = LoadingCache(1.0, load)
        before = asyncio.ensure_future(cache.fetch("k"))
        await settle()
        cache.clear()  # e.g. this process changed the row
        load.value = "v2"
        load.gate.set()  # type: ignore[union-attr]  # gated=True
        assert await before == "k:v1"  # its caller asked before the change
        assert await cache.fetch("k") == "k:v2"  # loaded anew: the old load was not stored
        assert load.calls == 2

    asyncio.run(main())


def test_a_failed_load_fails_its_callers_and_is_not_cached(clock: Clock) -> None:
    async def main() -> None:
        load = Loader(gated=True)
        load.fail = RuntimeError("database away")
        cache = LoadingCache(1.0, load)
        waiting = [asyncio.ensure_future(cache.fetch("k")) for _ in range(3)]
        await settle()
        load.gate.set()  # type: ignore[union-attr]  # gated=True
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(o, RuntimeError) for o in outcomes) and load.calls == 1
        load.fail = None
        assert await cache.fetch("k") == "k:v1" and load.calls == 2

    asyncio.run(main())


def test_a_failed_background_reload_keeps_the_entry_until_it_expires(clock: Clock) -> None:
    async def main() -> None:
        load = Loader()
        cache = LoadingCache(1.0, load)
        assert await cache.fetch("k") == "k:v1"
        load.fail = RuntimeError("database away")
        clock.now += 0.6
        assert await cache.fetch("k") == "k:v1"
        await settle()  # the reload failed (and its exception was retrieved)
        assert await cache.fetch("k") == "k:v1"
        await settle()
        assert load.calls == 3  # the next caller tried again
        clock.now += 0.5
        with pytest.raises(RuntimeError):
            await cache.fetch("k")

    asyncio.run(main())


def test_a_cancelled_caller_does_not_cancel_the_others_load(clock: Clock) -> None:
    async def main() -> None:
        load = Loader(gated=True)
        cache = LoadingCache(1.0, load)
        first = asyncio.ensure_future(cache.fetch("k"))
        second = asyncio.ensure_future(cache.fetch("k"))
        await settle()
        first.cancel()
        await settle()
        load.gate.set()  # type: ignore[union-attr]  # gated=True
        assert await second == "k:v1" and load.calls == 1
        assert first.cancelled()

    asyncio.run(main())
