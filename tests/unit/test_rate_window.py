"""The sliding-window counter (core/rate_window.py: the rule) and its two storages
(web/ratelimit.py): a table in process memory and a Lua script on a real Redis, both held
to the rule's answers. The arithmetic is checked at chosen instants; the storages are
checked to count, refuse, ask without counting and forget what is stale; the limiter is
checked to answer alike whichever storage counts."""

from __future__ import annotations

import asyncio
import random

import pytest
import redis

from fluxer_oauth.core.rate_window import NO_COUNTS, Counts, Outcome, Rate, advance, outcome, parse_rate
from fluxer_oauth.web.ratelimit import _STEPS, MemoryCounters, RedisCounters, StorageDown, WindowTable
from tests.backends import REDIS_URL, drop_redis_prefix, new_redis_prefix

pytestmark = pytest.mark.backend_independent  # runs both counters itself, whatever the backend


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


# The memory table answers in two ways: ``step`` (core's rule as written: any cost, asking
# with 0) and ``hit`` (one request, the rule written out for speed). The arithmetic tests
# run on ``step`` through this helper; ``test_the_table_answers_as_the_rule`` holds ``hit``
# and ``step`` to ``advance``, and the Redis tests hold the Lua script to it.
def step(table: WindowTable, key: str, rate: Rate, now: float, cost: int) -> Outcome:
    allowed, previous, current, elapsed = table.step(key, rate.amount, rate.period, now, cost)
    return outcome(allowed, previous, current, rate, elapsed)


def counts(table, key: str, period: float, now: float) -> tuple[int, int]:
    """The key's (previous, current) counts at ``now``, asking without counting."""
    _, previous, current, _ = table.step(key, 1, period, now, 0)
    return previous, current


def seeded(period: float, previous: int, current: int, at: float) -> WindowTable:
    """A table whose key "k" has these counts in the window of ``at`` and the one before."""
    table, window_start = WindowTable(), (at // period) * period
    if previous:
        table.step("k", 10**9, period, window_start - period, previous)
    if current:
        table.step("k", 10**9, period, window_start, current)
    return table


def test_advance_rolls_counts_into_the_window_of_now():
    assert advance(NO_COUNTS, 5, 10.0, 1003.0, 1) == (True, Counts(100, 0, 1), pytest.approx(3.0))
    assert advance(Counts(100, 0, 4), 5, 10.0, 1012.5, 0) == (True, Counts(101, 4, 0), pytest.approx(2.5))
    assert advance(Counts(99, 7, 4), 5, 10.0, 1012.5, 1).counts == Counts(101, 0, 1)  # a window skipped
    refused = advance(Counts(101, 5, 2), 5, 10.0, 1012.5, 1)  # 5 * 0.75 + 2 + 1 > 5
    assert not refused.allowed and refused.counts == Counts(101, 5, 2)
    with pytest.raises(ValueError):
        advance(NO_COUNTS, 1, 1.0, 10.0, -1)


def test_counts_up_to_the_limit_within_a_window():
    rate, table = Rate(3, 10.0), WindowTable()
    answers = [step(table, "k", rate, 1000.0 + n * 0.1, 1) for n in range(4)]
    assert [a.allowed for a in answers] == [True, True, True, False]
    assert [a.remaining for a in answers[:3]] == [2, 1, 0]
    assert counts(table, "k", 10.0, 1000.5) == (0, 3)  # the refused request was not counted
    assert answers[0].reset_after == pytest.approx(10.0)  # until the window ends


def test_previous_window_weighs_by_its_part_still_in_the_span():
    rate, table = Rate(10, 10.0), WindowTable()
    for _ in range(10):
        assert step(table, "k", rate, 1005.0, 1).allowed
    # 2.5 s into the next window, 75 % of the previous 10 still count: 7.5, so 2 more fit.
    answers = [step(table, "k", rate, 1012.5, 1) for _ in range(3)]
    assert [a.allowed for a in answers] == [True, True, False]
    assert answers[0].remaining == 1  # 10 - (7.5 + 1) = 1.5, rounded down


def test_a_skipped_window_forgets_everything():
    rate, table = Rate(2, 1.0), WindowTable()
    step(table, "k", rate, 50.2, 1), step(table, "k", rate, 50.3, 1)
    assert not step(table, "k", rate, 50.4, 1).allowed
    assert step(table, "k", rate, 52.1, 1).allowed and counts(table, "k", 1.0, 52.1) == (0, 1)


def test_retry_after_is_exactly_when_the_next_request_fits():
    rate = Rate(10, 10.0)
    for previous, current, at in [(0, 10, 1001.0), (10, 5, 1013.0), (4, 9, 1011.0), (10, 8, 1012.0), (10, 0, 1010.1)]:
        refused = step(seeded(10.0, previous, current, at), "k", rate, at, 1)
        assert not refused.allowed
        wait = refused.reset_after
        assert not step(seeded(10.0, previous, current, at), "k", rate, at + wait - 0.01, 0).allowed
        assert step(seeded(10.0, previous, current, at), "k", rate, at + wait + 0.01, 0).allowed


def test_asking_counts_nothing():
    rate, table = Rate(1, 60.0), WindowTable()
    assert step(table, "k", rate, 120.0, 0).allowed and counts(table, "k", 60.0, 120.0) == (0, 0)
    assert step(table, "k", rate, 120.0, 1).allowed
    assert not step(table, "k", rate, 120.0, 0).allowed and counts(table, "k", 60.0, 120.0) == (0, 1)


def test_tables_forget_keys_once_their_counts_have_decayed():
    table = WindowTable()
    for n in range(100):
        table.hit(f"ip-{n}", 5, 1.0, 1000.0)
    table.hit("fresh", 5, 1.0, 1001.5)  # the window after: the old counts still weigh
    assert len(table) == 101
    table.hit("fresh", 5, 1.0, 1002.5)  # two windows later: those keys count nothing
    assert len(table) == 1


def test_a_key_counted_at_a_longer_rate_outlives_the_buckets_sweeps():
    """An application's own limit (an override) may have another period than its bucket's
    default; sweeps made at the default's pace keep its counts while they still weigh."""
    table = WindowTable()
    assert table.hit("client:big", 3, 3600.0, 36_000.0) == 1.0
    for second in range(1, 200, 7):  # the default's keys come and go, sweeping every 10 s
        table.hit(f"ip:{second}", 10, 10.0, 36_000.0 + second)
    assert counts(table, "client:big", 3600.0, 36_200.0) == (0, 1)
    assert table.hit("client:big", 3, 3600.0, 36_200.0) == 2.0


def test_tables_refuse_what_they_cannot_count():
    table = WindowTable()
    with pytest.raises(ValueError):
        table.step("k", 1, 1.0, 10.0, -1)
    with pytest.raises(TypeError):
        table.hit(["unhashable"], 1, 1.0, 10.0)


def random_traffic(seed: int, count: int):
    """(now, key, amount, period, cost) of random requests on a few keys at two rates;
    cost None is one request through ``hit``."""
    generator = random.Random(seed)
    now = 1_000_000.0
    for _ in range(count):
        now += generator.choice([0.0, 0.001, 0.01, 0.1, 0.4, 1.3, 2.5, 7.0, 25.0])
        key = generator.choice(["a", "b", "c", "d"])
        amount, period = (5, 2.0) if key in "ab" else (50, 30.0)
        yield now, key, amount, period, None if generator.random() < 0.5 else generator.choice([0, 1, 1, 3])


def test_the_table_answers_as_the_rule():
    """Random traffic through ``hit`` and ``step``: every answer (floats included) is core's
    ``advance`` on counts kept beside it, and the table keeps no key whose counts weigh
    nothing for longer than a sweep."""
    table, reference = WindowTable(), {}
    for now, key, amount, period, cost in random_traffic(11, 20_000):
        before = reference.get(key, NO_COUNTS)
        if cost is None:
            expected = advance(before, amount, period, now, 1)
            estimate = table.hit(key, amount, period, now)
            assert (estimate is not None) == expected.allowed
            if estimate is not None:
                _, previous, current = expected.counts
                assert estimate == previous * (1.0 - expected.elapsed / period) + (current - 1) + 1
        else:
            expected = advance(before, amount, period, now, cost)
            assert table.step(key, amount, period, now, cost) == (expected.allowed, *expected.counts[1:],
                                                                  expected.elapsed)
        reference[key] = expected.counts
        assert counts(table, key, period, now) == expected.counts[1:]
        assert len(table) <= len(reference)


async def test_memory_counters_sweep_keys_of_ended_windows(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("fluxer_oauth.web.ratelimit.time.time", lambda: clock[0])
    counters, rate = MemoryCounters(), Rate(5, 1.0)
    for n in range(100):
        await counters.step("global", f"ip-{n}", rate, 1)
    clock[0] = 1003.5  # two windows later: those keys count nothing
    await counters.step("global", "fresh", rate, 1)
    assert len(counters.tables["global"]) == 1


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
    assert state.text_headers() == list(expected.items())


@pytest.mark.serial  # counts Redis's script calls server-wide
async def test_redis_counters_sent_together_each_get_their_own_answer(redis_counters):
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


async def test_an_allowed_memory_hit_states_what_the_full_step_would(monkeypatch):
    """RateLimits.hit answers an allowed request in memory from the table's ``hit``; its
    numbers must be the full step's, through a window change and the previous window's decay."""
    from fluxer_oauth.web.ratelimit import LimitState, RateLimited, RateLimits
    from tests.conftest import make_settings

    clock = [1_000_000.0]
    monkeypatch.setattr("fluxer_oauth.web.ratelimit.time.time", lambda: clock[0])
    limits = RateLimits(make_settings("sqlite://", rate_limits="on", rate_limit_token="5/10seconds"))
    rate, reference, refused = Rate(5, 10.0), WindowTable(), 0
    for at in (1_000_000.0, 1_000_001.0, 1_000_004.5, 1_000_012.0, 1_000_013.0, 1_000_019.9, 1_000_019.95,
               1_000_019.97):
        clock[0] = at
        expected = step(reference, "client:1", rate, at, 1)
        if not expected.allowed:
            with pytest.raises(RateLimited):
                await limits.hit("token", "client:1")
            refused += 1
            continue
        state = await limits.hit("token", "client:1")
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
    single, (which, paired), (refused_which, _), after = await asyncio.gather(
        counters.step("token", "client:d", token_rate, 1),
        counters.step_pair(("global", "ip-2", global_rate), ("token", "client:d", token_rate)),
        counters.step_pair(("global", "ip-1", global_rate), ("token", "client:e", token_rate)),
        counters.step("token", "client:f", token_rate, 1))
    assert single.remaining == 1 and which == 1 and paired.remaining == 0
    assert refused_which == 0 and after.allowed and after.remaining == 1


async def test_an_application_limited_per_hour_keeps_its_count_in_a_per_second_bucket(monkeypatch):
    """A trusted application's own limit (an override) over a longer period than its bucket's
    default: the sweeps made for the default's short-lived keys leave its count alone."""
    from fluxer_oauth.web.ratelimit import RateLimited, RateLimits
    from tests.conftest import make_settings

    clock = [1_000_000.0]
    monkeypatch.setattr("fluxer_oauth.web.ratelimit.time.time", lambda: clock[0])
    limits = RateLimits(make_settings("sqlite://", rate_limits="on", rate_limit_token="10/10seconds",
                                      rate_limit_overrides={"42": "3/hour"}))
    await limits.hit("token", "ip:0")  # the bucket's first key: its sweeps come every ten seconds
    for _ in range(3):
        await limits.hit("token", "client:42", client_id="42")
    for second in range(1, 120, 5):  # other clients come and go
        clock[0] = 1_000_000.0 + second
        await limits.hit("token", f"ip:{second}")
    with pytest.raises(RateLimited):
        await limits.hit("token", "client:42", client_id="42")


# --- the Lua script held to the rule, on Redis, with a clock of the test's own --------------

def script_at(client) -> "redis.commands.core.Script":
    """The production script's steps with the clock taken from ARGV[1] instead of Redis's."""
    return client.register_script("local now = tonumber(ARGV[1])\nlocal a = 2\n" + _STEPS)


def test_the_redis_script_answers_as_the_rule():
    """The random traffic of the table's test, one request or step at a time through the
    Lua script at the same instants: every answer is ``advance``'s (the elapsed seconds to
    the microsecond the script writes them in)."""
    prefix = new_redis_prefix()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        script, reference = script_at(client), {}
        for now, key, amount, period, cost in random_traffic(11, 3_000):
            cost = 1 if cost is None else cost
            expected = advance(reference.get(key, NO_COUNTS), amount, period, now, cost)
            (answer,) = script(keys=[f"{prefix}:rl:t:{key}"], args=[repr(now), "s", amount, repr(period), cost])
            allowed, previous, current, elapsed = answer
            assert (bool(allowed), int(previous), int(current)) == (expected.allowed, *expected.counts[1:])
            assert float(elapsed) == pytest.approx(expected.elapsed, abs=1e-6)
            reference[key] = expected.counts
    finally:
        client.close()
        drop_redis_prefix(prefix)


def test_a_pair_in_the_redis_script_counts_as_two_hits_in_memory():
    """Global then bucket: the script's pair and the table's two hits agree at every instant,
    including on which of the two refused (refused globally, the bucket is not counted)."""
    prefix = new_redis_prefix()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        script, tables = script_at(client), {"global": WindowTable(), "token": WindowTable()}
        generator, now = random.Random(5), 2_000_000.0
        for _ in range(2_000):
            now += generator.choice([0.0, 0.01, 0.2, 0.7, 3.0])
            ip, client_key = generator.choice(["ip-1", "ip-2"]), generator.choice(["client:1", "client:2"])
            global_rate, token_rate = Rate(6, 2.0), Rate(3, 5.0)
            (answer,) = script(keys=[f"{prefix}:rl:global:{ip}", f"{prefix}:rl:token:{client_key}"],
                               args=[repr(now), "p", global_rate.amount, repr(global_rate.period),
                                     token_rate.amount, repr(token_rate.period)])
            which, (allowed, _, _, _) = answer
            if tables["global"].hit(ip, global_rate.amount, global_rate.period, now) is None:
                assert (which, allowed) == (1, 0)
                continue
            counted = tables["token"].hit(client_key, token_rate.amount, token_rate.period, now) is not None
            assert (which, bool(allowed)) == (2, counted)
    finally:
        client.close()
        drop_redis_prefix(prefix)


# --- the limiter: the same calls and answers in memory and in Redis -------------------------

@pytest.fixture(params=["memory", "redis"])
async def limits_factory(request):
    from fluxer_oauth.web.ratelimit import RateLimits
    from tests.conftest import make_settings

    made, prefix = [], new_redis_prefix()

    def make(**overrides):
        if request.param == "redis":
            overrides |= {"redis_url": REDIS_URL, "redis_prefix": prefix}
        limits = RateLimits(make_settings("sqlite://", rate_limits="on", **overrides))
        made.append(limits)
        return limits

    yield make
    for limits in made:
        await limits.close()
    drop_redis_prefix(prefix)


async def test_hit_counts_refuses_and_states_alike_in_either_storage(limits_factory):
    from fluxer_oauth.web.ratelimit import RateLimited

    limits = limits_factory(rate_limit_token="3/minute")
    states = [await limits.hit("token", "client:1") for _ in range(3)]
    assert [(s.bucket, s.limit, s.remaining) for s in states] == [("token", 3, 2), ("token", 3, 1), ("token", 3, 0)]
    with pytest.raises(RateLimited) as refused:
        await limits.hit("token", "client:1")
    assert refused.value.status == 429 and refused.value.headers["x-ratelimit-remaining"] == "0"
    assert await limits.hit("token", "client:2", with_state=False) is None  # counted, no state wanted
    await limits.check("token", "client:2")  # one of three used: asking passes, counts nothing
    await limits.record("token", "client:2")
    await limits.record("token", "client:2")
    await limits.record("token", "client:2")  # over the limit: recorded all the same, no raise
    with pytest.raises(RateLimited):
        await limits.check("token", "client:2")


async def test_refused_globally_the_bucket_is_not_counted(limits_factory):
    from fluxer_oauth.web.ratelimit import RateLimited

    limits = limits_factory(rate_limit_global="2/minute", rate_limit_token="5/minute")
    assert (await limits.hit_global_and("ip-1", "token", "client:1")).remaining == 4
    assert (await limits.hit_global_and("ip-1", "token", "client:1")).remaining == 3
    with pytest.raises(RateLimited) as refused:
        await limits.hit_global_and("ip-1", "token", "client:1")
    assert refused.value.headers["x-ratelimit-bucket"] == "global"
    assert (await limits.hit("token", "client:1")).remaining == 2  # the refused one was not counted
    assert (await limits.hit_global_and("ip-2", "token", "client:1")).remaining == 1  # another address


async def test_limits_off_count_nothing(limits_factory):
    limits = limits_factory()
    limits.enabled = False
    for _ in range(100):
        assert await limits.hit("register", "ip:x") is None
        assert await limits.hit_global_and("ip", "register", "ip:x") is None


async def test_the_scope_helpers_keep_the_state_and_the_pending_global_count(limits_factory):
    from fluxer_oauth.web.ratelimit import (GLOBAL_PENDING, RateLimited, admit_client, client_ip,
                                            count_failed_client_auth, count_pending_global, limit)

    class App:
        limits = limits_factory(rate_limit_global="3/minute", rate_limit_token="10/minute",
                                rate_limit_client_auth_failures="1/minute")

    scope = {"app": App, "state": {"client_ip": "203.0.113.9", GLOBAL_PENDING: True}, "client": ("10.0.0.1", 1)}
    assert client_ip(scope) == "203.0.113.9"
    await admit_client(scope, "token", 77)
    state = scope["state"]
    assert GLOBAL_PENDING not in state and (state["rate_limit"].bucket, state["rate_limit"].remaining) == ("token", 9)
    await limit(scope, "token", "client:77", client_id="77")
    assert state["rate_limit"].remaining == 8
    state[GLOBAL_PENDING] = True
    await count_pending_global(scope)  # the global's second
    await count_pending_global(scope)  # nothing pending: counts nothing
    state[GLOBAL_PENDING] = True
    await count_failed_client_auth(scope)  # the global's third, the address's one failure
    assert state["rate_limit"].bucket == "client_auth"
    with pytest.raises(RateLimited):
        await count_failed_client_auth(scope)
    state[GLOBAL_PENDING] = True
    with pytest.raises(RateLimited) as refused:
        await admit_client(scope, "token", 77)
    assert refused.value.headers["x-ratelimit-bucket"] == "global"


def test_health_probes_and_metrics_are_exempt_from_the_global_limit():
    from fluxer_oauth.web.ratelimit import exempt_from_global

    assert exempt_from_global("/healthz") and exempt_from_global("/readyz") and exempt_from_global("/metrics")
    assert not exempt_from_global("/api/v1/oauth2/token") and not exempt_from_global("/healthz/x")
