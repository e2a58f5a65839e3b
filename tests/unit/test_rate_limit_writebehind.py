"""Rate limits in Redis written behind (web/ratelimit.py, RedisCounters): a hit far below its
limit is decided on the worker's view of the counter without waiting for Redis, and the
hits so admitted reach Redis in one script call per flush; near the limit the exact path
decides. Checked on a real Redis, with two limiters on one prefix standing for two workers."""

from __future__ import annotations

import asyncio

import pytest
import redis

from fluxer_oauth.ops import metrics
from fluxer_oauth.web import ratelimit
from fluxer_oauth.web.ratelimit import RateLimited, RateLimits
from tests.backends import REDIS_URL, drop_redis_prefix, new_redis_prefix
from tests.conftest import make_settings

pytestmark = pytest.mark.backend_independent  # Redis whatever the backend


@pytest.fixture
async def workers():
    """Makes limiters on one Redis prefix: each one is a worker's."""
    made, prefix = [], new_redis_prefix()

    def make(**overrides) -> RateLimits:
        limits = RateLimits(make_settings("sqlite://", rate_limits="on", redis_url=REDIS_URL, redis_prefix=prefix,
                                          **overrides))
        made.append(limits)
        return limits

    make.prefix = prefix
    yield make
    for limits in made:
        await limits.close()
    drop_redis_prefix(prefix)


def at_once(coroutine):
    """The coroutine's result when it finishes without suspending once; fails if it waits."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value
    coroutine.close()
    raise AssertionError("the hit waited for Redis")


def stored_count(prefix: str, bucket: str, key: str) -> int:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return int(client.hget(f"{prefix}:rl:{bucket}:{key}", "c") or 0)
    finally:
        client.close()


async def admitted(limits: RateLimits, bucket: str, key: str) -> bool:
    try:
        await limits.hit(bucket, key, with_state=False)
    except RateLimited:
        return False
    return True


async def test_hits_far_below_the_limit_wait_for_nothing_and_are_written_in_few_calls(workers, monkeypatch):
    monkeypatch.setattr(ratelimit, "MAX_VIEW_AGE", 5.0)  # a loaded test machine: the view stays usable
    limits = workers(rate_limit_token="1000/minute")
    counters = limits.counters
    first = await limits.hit("token", "client:1")  # no view yet: the exact path, which makes one
    assert first.remaining == 999
    before = counters.batches
    remaining = []
    for n in range(400):
        state = at_once(limits.hit("token", "client:1"))
        remaining.append(state.remaining)
        if n % 20 == 19:
            await asyncio.sleep(0)  # the server's loop turns: flushes go meanwhile
    # One process alone: its view counts every hit of its own, so the headers stay exact,
    # and they tell the window's end on Redis's clock, as the exact path does.
    assert remaining == list(range(998, 598, -1))
    assert abs(state.reset_at - first.reset_at) < 0.25  # within the clock offset's error (half a round trip)
    await counters.flush()
    calls = counters.batches - before
    assert 1 <= calls <= 21  # at most a flush per turn of the loop (20), and the last; the exact path made 400
    assert stored_count(workers.prefix, "token", "client:1") == 401


async def test_near_the_limit_one_worker_is_exact(workers):
    limits = workers(rate_limit_token="20/minute")
    results = []
    for _ in range(25):
        results.append(await admitted(limits, "token", "client:1"))
    assert results == [True] * 20 + [False] * 5
    assert stored_count(workers.prefix, "token", "client:1") == 20
    # The headers of the last admitted and of a refusal are the exact path's.
    other = [await limits.hit("token", "client:2") for _ in range(20)]
    assert [state.remaining for state in other] == list(range(19, -1, -1))


async def test_two_workers_taking_turns_admit_exactly_the_limit(workers):
    one, two = workers(rate_limit_token="40/minute"), workers(rate_limit_token="40/minute")
    results = []
    for n in range(60):
        limits = (one, two)[n % 2]
        results.append(await admitted(limits, "token", "client:1"))
        await limits.counters.flush()  # requests spaced wider than a flush interval
    assert results == [True] * 40 + [False] * 20
    assert stored_count(workers.prefix, "token", "client:1") == 40


async def test_two_workers_bursting_together_stay_within_the_documented_bound(workers):
    limit = 200
    pair = [workers(rate_limit_token=f"{limit}/minute") for _ in range(2)]

    async def worker(limits: RateLimits) -> int:
        count = 0
        for n in range(300):
            count += await admitted(limits, "token", "client:1")
            if n % 5 == 4:
                await asyncio.sleep(0)
        return count

    counts = await asyncio.gather(*(worker(limits) for limits in pair))
    for limits in pair:
        await limits.counters.flush()
    # At worst, what the other worker admitted on its view and had not written yet.
    assert limit <= sum(counts) <= limit + ratelimit.LOCAL_SHARE * limit
    assert stored_count(workers.prefix, "token", "client:1") == sum(counts)


async def test_a_flush_refreshes_the_view_with_the_other_workers_hits(workers, monkeypatch):
    monkeypatch.setattr(ratelimit, "MAX_VIEW_AGE", 5.0)
    one, two = workers(rate_limit_token="100/minute"), workers(rate_limit_token="100/minute")
    assert (await two.hit("token", "client:1")).remaining == 99  # two's view: 1
    for _ in range(30):
        await one.hit("token", "client:1")
    await one.counters.flush()  # Redis: 31
    assert at_once(two.hit("token", "client:1")).remaining == 98  # on two's view, not yet refreshed
    await two.counters.flush()  # writes it (Redis: 32) and brings the view up to date
    assert at_once(two.hit("token", "client:1")).remaining == 100 - 33


async def test_a_stale_view_is_not_trusted(workers, monkeypatch):
    monkeypatch.setattr(ratelimit, "MAX_VIEW_AGE", 0.05)
    limits = workers(rate_limit_token="100/minute")
    await limits.hit("token", "client:1")
    at_once(limits.hit("token", "client:1"))
    await asyncio.sleep(0.1)
    await limits.counters.flush()
    await asyncio.sleep(0.1)
    before = limits.counters.batches
    assert (await limits.hit("token", "client:1")).remaining == 97  # the exact path again
    assert limits.counters.batches == before + 1


async def test_global_and_bucket_pairs_are_written_behind_together(workers, monkeypatch):
    monkeypatch.setattr(ratelimit, "MAX_VIEW_AGE", 5.0)
    limits = workers(rate_limit_global="1000/minute", rate_limit_token="500/minute")
    assert (await limits.hit_global_and("ip-1", "token", "client:1")).remaining == 499
    states = [at_once(limits.hit_global_and("ip-1", "token", "client:1")) for _ in range(200)]
    assert [state.remaining for state in states] == list(range(498, 298, -1))
    # Over half the bucket's limit, the pair goes the exact way again (and counts both).
    for _ in range(60):
        await limits.hit_global_and("ip-1", "token", "client:1")
    await limits.counters.flush()
    assert stored_count(workers.prefix, "global", "ip-1") == 261
    assert stored_count(workers.prefix, "token", "client:1") == 261


async def test_views_of_keys_gone_quiet_are_dropped(workers, monkeypatch):
    limits = workers(rate_limit_global="1000/minute")
    for n in range(50):
        await limits.hit("global", f"ip-{n}")
    assert len(limits.counters._views) == 50
    monkeypatch.setattr(ratelimit, "MAX_VIEW_AGE", 0.0)
    await asyncio.sleep(ratelimit._SWEEP_EVERY + 0.1)  # the next sweep is due, and they are all stale
    await limits.hit("global", "fresh")
    assert list(limits.counters._views) == [f"{workers.prefix}:rl:global:fresh"]


async def test_redis_gone_after_views_were_made_fails_open(workers, monkeypatch):
    limits = workers(rate_limit_token="10/minute")
    assert (await limits.hit("token", "client:1")).remaining == 9
    # Redis goes away: the limiter's connection now leads nowhere.
    gone = redis.asyncio.from_url("redis://127.0.0.1:1/0", socket_timeout=0.5, socket_connect_timeout=0.5)
    counters = limits.counters
    counters._batch_script = gone.register_script(ratelimit._BATCH_SCRIPT)
    errors = metrics.REDIS_ERRORS._value.get()
    results = [await admitted(limits, "token", "client:1") for _ in range(4)]  # on the view, written behind
    await counters.flush()  # the writes fail: counted and logged, nothing raised
    await asyncio.sleep(ratelimit.MAX_VIEW_AGE + 0.05)
    results += [await admitted(limits, "token", "client:1") for _ in range(20)]  # the exact path, failing open
    assert all(results)
    assert metrics.REDIS_ERRORS._value.get() - errors >= 2
    assert counters._views[f"{workers.prefix}:rl:token:client:1"].sending == 0
    await gone.aclose()
