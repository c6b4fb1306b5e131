"""API keys, rate limiting and admission, as plain objects."""

from __future__ import annotations

import asyncio

import pytest

from sandbox_api.auth import KeyConfigError, KeyRing, digest, generate_key, parse_key_entries
from sandbox_api.limits import Admission, FairSlots, LimitExceeded, RateLimiter, TokenBucket


def test_keys_are_kept_only_as_digests_and_map_to_tenants():
    key = generate_key()
    ring = KeyRing(parse_key_entries(f"# comment\nteam-a:{digest(key)}\n\n", source="test"))
    assert ring.tenant_for(key) == "team-a"
    assert ring.tenant_for(key + "x") is None
    assert key not in repr(ring.__dict__)


def test_generated_keys_are_long_and_distinct():
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100 and all(len(key) >= 40 for key in keys)


@pytest.mark.parametrize("entry", ["team-a:short", "Team:" + "a" * 64, "no-colon", ":" + "a" * 64])
def test_malformed_key_entries_are_refused(entry):
    with pytest.raises(KeyConfigError):
        parse_key_entries(entry, source="test")


def test_comma_separated_entries_from_the_environment():
    line = f"a:{'1' * 64},b:{'2' * 64}"
    assert parse_key_entries(line, source="env") == {"1" * 64: "a", "2" * 64: "b"}


def test_token_bucket_refills_at_its_rate():
    bucket = TokenBucket(rate_per_s=2, burst=2, tokens=2, updated=0)
    assert bucket.take(0) == 0 and bucket.take(0) == 0
    assert bucket.take(0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0


def test_rate_limiter_is_per_tenant():
    limiter = RateLimiter(per_minute=1, burst=1)
    limiter.check("a")
    with pytest.raises(LimitExceeded) as refused:
        limiter.check("a")
    assert refused.value.retry_after_s >= 1
    limiter.check("b")


def test_admission_caps_per_tenant_and_in_total():
    admission = Admission(per_tenant=2, total=3, share_percent=100)
    admission.admit("a")
    admission.admit("a")
    with pytest.raises(LimitExceeded, match="unfinished"):
        admission.admit("a")
    admission.admit("b")
    with pytest.raises(LimitExceeded, match="capacity"):
        admission.admit("c")
    admission.release("a")
    admission.admit("c")
    assert admission.in_flight == 3


def test_one_tenant_holds_at_most_its_share_of_the_server():
    admission = Admission(per_tenant=64, total=10, share_percent=30)
    for _ in range(3):
        admission.admit("a")
    with pytest.raises(LimitExceeded, match=r"share of the server \(3 of 10"):
        admission.admit("a")
    for tenant in "bbbcccd":
        admission.admit(tenant)
    with pytest.raises(LimitExceeded, match="capacity"):
        admission.admit("e")


def test_a_freed_worker_goes_to_the_key_holding_the_fewest():
    async def scenario() -> list[str]:
        slots = FairSlots(2)
        started: list[str] = []
        release = {name: asyncio.Event() for name in ("a1", "a2", "a3", "a4", "b1", "c1")}

        async def run(name: str) -> None:
            async with slots.slot(name[0]):
                started.append(name)
                await release[name].wait()

        tasks = []
        for name in ("a1", "a2", "a3", "a4", "b1", "c1"):  # a queues two more before b and c arrive
            tasks.append(asyncio.create_task(run(name)))
            await asyncio.sleep(0)
        assert started == ["a1", "a2"], "idle workers are not withheld from a lone key"
        for name in ("a1", "a2", "b1", "c1"):
            release[name].set()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        release["a3"].set()
        release["a4"].set()
        await asyncio.gather(*tasks)
        assert slots.free == 2
        return started

    # a1 frees a worker: b (holding none) gets it before a's queue. a2 frees one: a and c hold none,
    # a has waited longer. b1 frees one: c holds none, a one.
    assert asyncio.run(scenario()) == ["a1", "a2", "b1", "a3", "c1", "a4"]


def test_a_waiter_cancelled_gives_no_slot_away():
    async def scenario() -> int:
        slots = FairSlots(1)
        hold = asyncio.Event()

        async def holder() -> None:
            async with slots.slot("a"):
                await hold.wait()

        async def waiter() -> None:
            async with slots.slot("b"):
                pass

        first = asyncio.create_task(holder())
        await asyncio.sleep(0)
        second = asyncio.create_task(waiter())
        await asyncio.sleep(0)
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
        hold.set()
        await first
        return slots.free

    assert asyncio.run(scenario()) == 1
