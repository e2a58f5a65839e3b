"""The sliding-window counter (core/rate_window.py) and its two storages: process memory and
a Lua script on a real Redis. The arithmetic is checked at chosen instants; the storages are
checked to count, refuse, ask without counting and forget what is stale."""

from __future__ import annotations

import pytest
import redis

from fluxer_oauth.core.rate_window import Rate, count, parse_rate, step
from fluxer_oauth.web.ratelimit import MemoryCounters, RedisCounters, StorageDown
from tests.backends import REDIS_URL, drop_redis_prefix, new_redis_prefix


@pytest.mark.parametrize(("text", "rate"), [
    ("10/10seconds", Rate(10, 10.0)), ("50/second", Rate(50, 1.0)), ("10/5minutes", Rate(10, 300.0)),
    ("3 per minute", Rate(3, 60.0)), ("1000000000/second", Rate(1_000_000_000, 1.0)), ("2/1day", Rate(2, 86400.0)),
])
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "10", "ten/second", "10/fortnight", "0/second", "10/0seconds", "-1/second"])
def test_parse_rate_refuses_what_it_cannot_read(text):
    with pytest.raises(ValueError):
        parse_rate(text)


def test_counts_up_to_the_limit_within_a_window():
    rate, state = Rate(3, 10.0), [None, 0, 0]
    answers = [step(state, rate, 1000.0 + n * 0.1, 1) for n in range(4)]
    assert [a.allowed for a in answers] == [True, True, True, False]
    assert [a.remaining for a in answers[:3]] == [2, 1, 0]
    assert state == [100, 0, 3]  # the refused request was not counted
    assert answers[0].reset_after == pytest.approx(10.0)  # until the window ends


def test_previous_window_weighs_by_its_part_still_in_the_span():
    rate, state = Rate(10, 10.0), [None, 0, 0]
    for _ in range(10):
        assert step(state, rate, 1005.0, 1).allowed
    # 2.5 s into the next window, 75 % of the previous 10 still count: 7.5, so 2 more fit.
    answers = [step(state, rate, 1012.5, 1) for _ in range(3)]
    assert [a.allowed for a in answers] == [True, True, False]
    assert answers[0].remaining == 1  # 10 - (7.5 + 1) = 1.5, rounded down


def test_a_skipped_window_forgets_everything():
    rate, state = Rate(2, 1.0), [None, 0, 0]
    step(state, rate, 50.2, 1), step(state, rate, 50.3, 1)
    assert not step(state, rate, 50.4, 1).allowed
    assert step(state, rate, 52.1, 1).allowed and state == [52, 0, 1]


def test_retry_after_is_exactly_when_the_next_request_fits():
    rate = Rate(10, 10.0)
    for previous, current, at in [(0, 10, 1001.0), (10, 5, 1013.0), (4, 9, 1011.0), (10, 8, 1012.0), (10, 0, 1010.1)]:
        state = [int(at // 10), previous, current]
        refused = step(list(state), rate, at, 1)
        assert not refused.allowed
        wait = refused.reset_after
        assert not step(list(state), rate, at + wait - 0.01, 0).allowed
        assert step(list(state), rate, at + wait + 0.01, 0).allowed


def test_asking_counts_nothing():
    rate, state = Rate(1, 60.0), [None, 0, 0]
    assert step(state, rate, 120.0, 0).allowed and state[2] == 0
    assert step(state, rate, 120.0, 1).allowed
    assert not step(state, rate, 120.0, 0).allowed and state[2] == 1


async def test_memory_counters_sweep_keys_of_ended_windows(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("fluxer_oauth.web.ratelimit.time.time", lambda: clock[0])
    counters, rate = MemoryCounters(), Rate(5, 1.0)
    for n in range(100):
        counters.step_now("global", f"ip-{n}", rate, 1)
    clock[0] = 1003.5  # two windows later: those keys count nothing
    counters.step_now("global", "fresh", rate, 1)
    assert list(counters._states["global"]) == ["fresh"]


@pytest.fixture
async def redis_counters():
    prefix = new_redis_prefix()
    counters = RedisCounters(REDIS_URL, prefix)
    yield counters, prefix
    await counters.close()
    drop_redis_prefix(prefix)


async def test_redis_counters_count_refuse_and_expire(redis_counters):
    counters, prefix = redis_counters
    rate = Rate(3, 10.0)
    assert (await counters.step("token", "client:1", rate, 0)).remaining == 3  # asking counts nothing
    answers = [await counters.step("token", "client:1", rate, 1) for _ in range(4)]
    assert [a.allowed for a in answers] == [True, True, True, False]
    assert [a.remaining for a in answers] == [2, 1, 0, 0]
    assert 0 < answers[-1].reset_after <= 10 + 10 / 3
    assert (await counters.step("token", "client:2", rate, 1)).allowed  # another key, its own counter
    client = redis.Redis.from_url(REDIS_URL)
    try:
        ttl = client.pttl(f"{prefix}:rl:token:client:1")
        assert 0 < ttl <= 20_000  # kept two periods, then Redis forgets it
    finally:
        client.close()


async def test_redis_counters_say_when_redis_is_gone():
    counters = RedisCounters("redis://127.0.0.1:1/0", "gone")
    with pytest.raises(StorageDown):
        await counters.step("token", "k", Rate(1, 1.0), 1)
    await counters.close()


def test_limit_headers_say_where_the_key_stands(monkeypatch):
    from fluxer_oauth.web.ratelimit import LimitState

    monkeypatch.setattr("fluxer_oauth.web.ratelimit.time.time", lambda: 1_700_000_000.0)
    state = LimitState("token", 10, 4, 1_700_000_000.25)
    expected = {
        "x-ratelimit-limit": "10", "x-ratelimit-remaining": "4", "x-ratelimit-reset": "1700000001",
        "x-ratelimit-reset-after": "0.250", "x-ratelimit-bucket": "token",
    }
    assert state.headers() == expected
    assert state.raw_headers() == [(name.encode(), value.encode()) for name, value in expected.items()]


async def test_redis_counters_sent_together_each_get_their_own_answer(redis_counters):
    import asyncio

    counters, _prefix = redis_counters
    rate = Rate(5, 10.0)
    client = redis.Redis.from_url(REDIS_URL)

    def script_calls() -> int:
        stats = client.info("commandstats")
        return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))

    await counters.step("token", "warm-up", rate, 0)  # the script is loaded (a first call may load it)
    before = script_calls()
    # one turn of the event loop: one script call to Redis, twelve answers
    answers = await asyncio.gather(*[counters.step("token", "client:busy", rate, 1) for _ in range(10)],
                                   counters.step("token", "client:quiet", rate, 1),
                                   counters.step("token", "client:quiet", rate, 0))
    assert script_calls() - before == 1
    client.close()
    busy, quiet = answers[:10], answers[10:]
    assert [a.allowed for a in busy] == [True] * 5 + [False] * 5  # counted in the order they came
    assert [a.remaining for a in busy[:5]] == [4, 3, 2, 1, 0]
    assert quiet[0].allowed and quiet[0].remaining == 4 and quiet[1].remaining == 4


def test_count_agrees_with_step_and_a_refusal_counts_nothing():
    """``count`` is ``step`` without the numbers for the headers (the global limit's path)."""
    import random

    generator = random.Random(7)
    rate, by_step, by_count = Rate(5, 2.0), [None, 0, 0], [None, 0, 0]
    now = 1000.0
    for _ in range(2000):
        now += generator.choice([0.0, 0.01, 0.1, 0.4, 1.3, 2.5])
        cost = generator.choice([0, 1, 1, 1, 2])
        before = list(by_count)
        allowed = count(by_count, rate, now, cost)
        assert allowed == step(by_step, rate, now, cost).allowed
        assert by_count == by_step
        if not allowed:  # only the window's move, never a count
            assert by_count[2] == (before[2] if before[0] == by_count[0] else 0)


def test_an_allowed_memory_hit_states_what_the_full_step_would(monkeypatch):
    """RateLimits.hit_now answers an allowed request from the counter directly; its numbers
    must be step()'s, through a window change and the previous window's decay."""
    from fluxer_oauth.web.ratelimit import LimitState, RateLimited, RateLimits
    from tests.conftest import make_settings

    clock = [1_000_000.0]
    monkeypatch.setattr("fluxer_oauth.web.ratelimit.time.time", lambda: clock[0])
    limits = RateLimits(make_settings("sqlite://", rate_limits="on", rate_limit_token="5/10seconds"))
    rate, reference, refused = Rate(5, 10.0), [None, 0, 0], 0
    for at in (1_000_000.0, 1_000_001.0, 1_000_004.5, 1_000_012.0, 1_000_013.0, 1_000_019.9, 1_000_019.95,
               1_000_019.97):
        clock[0] = at
        expected = step(reference, rate, at, 1)
        if not expected.allowed:
            with pytest.raises(RateLimited):
                limits.hit_now("token", "client:1")
            refused += 1
            continue
        state = limits.hit_now("token", "client:1")
        assert isinstance(state, LimitState)
        assert (state.limit, state.remaining) == (5, expected.remaining)
        assert state.reset_at == pytest.approx(at + expected.reset_after)
    assert refused == 1  # the last one: the sequence reaches the limit


async def test_redis_pair_counts_the_second_only_when_the_first_allows(redis_counters):
    """The global and an endpoint's counter in one script call: global first; refused there,
    the endpoint's counter is left as it was; allowed, the endpoint's own step answers."""
    counters, prefix = redis_counters
    global_rate, token_rate = Rate(4, 60.0), Rate(2, 60.0)

    def pair(client: str):
        return counters.step_pair(("global", "ip-1", global_rate), ("token", client, token_rate))

    answers = [await pair("client:a") for _ in range(3)]
    assert [(which, a.allowed, a.remaining) for which, a in answers] == [(1, True, 1), (1, True, 0), (1, False, 0)]
    which, fourth = await pair("client:b")  # the global's fourth and last
    assert (which, fourth.allowed, fourth.remaining) == (1, True, 1)
    which, refused = await pair("client:c")
    assert which == 0 and not refused.allowed and refused.remaining == 0  # the global refused
    assert 0 < refused.reset_after <= 60 + 60 / 4
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert not client.exists(f"{prefix}:rl:token:client:c")  # never counted
        assert int(client.hget(f"{prefix}:rl:token:client:a", "c")) == 2  # its refusal counted nothing
        assert int(client.hget(f"{prefix}:rl:global:ip-1", "c")) == 4  # a refusal by the second did count here
    finally:
        client.close()
    # Single steps and pairs of one turn share one script call, and each gets its own answer,
    # also after a pair the global refused (its second key is skipped, not shifted).
    import asyncio

    single, (which, paired), (refused_which, _), after = await asyncio.gather(
        counters.step("token", "client:d", token_rate, 1),
        counters.step_pair(("global", "ip-2", global_rate), ("token", "client:d", token_rate)),
        counters.step_pair(("global", "ip-1", global_rate), ("token", "client:e", token_rate)),
        counters.step("token", "client:f", token_rate, 1))
    assert single.remaining == 1 and which == 1 and paired.remaining == 0
    assert refused_which == 0 and after.allowed and after.remaining == 1
