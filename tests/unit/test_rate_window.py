"""The sliding-window counter (core/rate_window.py) and its two storages: process memory (a
table in Python and its compiled twin, held to the same answers) and a Lua script on a real
Redis. The arithmetic is checked at chosen instants; the storages are checked to count,
refuse, ask without counting and forget what is stale."""

from __future__ import annotations

import pytest
import redis

from fluxer_oauth.core import rate_window
from fluxer_oauth.core.rate_window import PyWindowTable, Rate, parse_rate, step
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


# Every table test runs on both: the pure-Python reference and the compiled one (the one
# the server uses when it is built; see test_the_compiled_table_is_built).
@pytest.fixture(params=["python", "compiled"])
def table_type(request):
    if request.param == "python":
        return PyWindowTable
    if rate_window.WindowTable is PyWindowTable:
        pytest.skip("the compiled table is not built here (no C compiler at install)")
    return rate_window.WindowTable


def counts(table, key: str, period: float, now: float) -> tuple[int, int]:
    """The key's (previous, current) counts at ``now``, asking without counting."""
    _, previous, current, _ = table.step(key, 1, period, now, 0)
    return previous, current


def seeded(table_type, period: float, previous: int, current: int, at: float):
    """A table whose key "k" has these counts in the window of ``at`` and the one before."""
    table, window_start = table_type(), (at // period) * period
    if previous:
        table.step("k", 10**9, period, window_start - period, previous)
    if current:
        table.step("k", 10**9, period, window_start, current)
    return table


def test_counts_up_to_the_limit_within_a_window(table_type):
    rate, table = Rate(3, 10.0), table_type()
    answers = [step(table, "k", rate, 1000.0 + n * 0.1, 1) for n in range(4)]
    assert [a.allowed for a in answers] == [True, True, True, False]
    assert [a.remaining for a in answers[:3]] == [2, 1, 0]
    assert counts(table, "k", 10.0, 1000.5) == (0, 3)  # the refused request was not counted
    assert answers[0].reset_after == pytest.approx(10.0)  # until the window ends


def test_previous_window_weighs_by_its_part_still_in_the_span(table_type):
    rate, table = Rate(10, 10.0), table_type()
    for _ in range(10):
        assert step(table, "k", rate, 1005.0, 1).allowed
    # 2.5 s into the next window, 75 % of the previous 10 still count: 7.5, so 2 more fit.
    answers = [step(table, "k", rate, 1012.5, 1) for _ in range(3)]
    assert [a.allowed for a in answers] == [True, True, False]
    assert answers[0].remaining == 1  # 10 - (7.5 + 1) = 1.5, rounded down


def test_a_skipped_window_forgets_everything(table_type):
    rate, table = Rate(2, 1.0), table_type()
    step(table, "k", rate, 50.2, 1), step(table, "k", rate, 50.3, 1)
    assert not step(table, "k", rate, 50.4, 1).allowed
    assert step(table, "k", rate, 52.1, 1).allowed and counts(table, "k", 1.0, 52.1) == (0, 1)


def test_retry_after_is_exactly_when_the_next_request_fits(table_type):
    rate = Rate(10, 10.0)
    for previous, current, at in [(0, 10, 1001.0), (10, 5, 1013.0), (4, 9, 1011.0), (10, 8, 1012.0), (10, 0, 1010.1)]:
        refused = step(seeded(table_type, 10.0, previous, current, at), "k", rate, at, 1)
        assert not refused.allowed
        wait = refused.reset_after
        assert not step(seeded(table_type, 10.0, previous, current, at), "k", rate, at + wait - 0.01, 0).allowed
        assert step(seeded(table_type, 10.0, previous, current, at), "k", rate, at + wait + 0.01, 0).allowed


def test_asking_counts_nothing(table_type):
    rate, table = Rate(1, 60.0), table_type()
    assert step(table, "k", rate, 120.0, 0).allowed and counts(table, "k", 60.0, 120.0) == (0, 0)
    assert step(table, "k", rate, 120.0, 1).allowed
    assert not step(table, "k", rate, 120.0, 0).allowed and counts(table, "k", 60.0, 120.0) == (0, 1)


def test_tables_forget_keys_once_their_counts_have_decayed(table_type):
    table = table_type()
    for n in range(100):
        table.hit(f"ip-{n}", 5, 1.0, 1000.0)
    table.hit("fresh", 5, 1.0, 1001.5)  # the window after: the old counts still weigh
    assert len(table) == 101
    table.hit("fresh", 5, 1.0, 1002.5)  # two windows later: those keys count nothing
    assert len(table) == 1


def test_a_key_counted_at_a_longer_rate_outlives_the_buckets_sweeps(table_type):
    """An application's own limit (an override) may have another period than its bucket's
    default; sweeps made at the default's pace keep its counts while they still weigh."""
    table = table_type()
    assert table.hit("client:big", 3, 3600.0, 36_000.0) == (2, 39_600.0)
    for second in range(1, 200, 7):  # the default's keys come and go, sweeping every 10 s
        table.hit(f"ip:{second}", 10, 10.0, 36_000.0 + second)
    assert counts(table, "client:big", 3600.0, 36_200.0) == (0, 1)
    assert table.hit("client:big", 3, 3600.0, 36_200.0) == (1, 39_600.0)


def test_tables_refuse_what_they_cannot_count(table_type):
    table = table_type()
    with pytest.raises(ValueError):
        table.step("k", 1, 1.0, 10.0, -1)
    with pytest.raises(TypeError):
        table.hit(["unhashable"], 1, 1.0, 10.0)


def test_the_compiled_table_is_built():
    """Where the project was installed with a C compiler, the server counts with the compiled
    table: a failed build would otherwise go unnoticed (the extension is optional)."""
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here: the pure-Python table is the one in use")
    assert rate_window.WindowTable is not PyWindowTable
    assert rate_window.WindowTable.__module__ == "fluxer_oauth.core._window"


def test_the_compiled_table_answers_as_the_reference():
    """Random traffic on a few keys at two rates, through hits, counted steps and asks: the
    compiled table's every answer (floats included) and size equal the Python table's."""
    import random

    if rate_window.WindowTable is PyWindowTable:
        pytest.skip("the compiled table is not built here")
    generator = random.Random(11)
    reference, compiled = PyWindowTable(), rate_window.WindowTable()
    now = 1_000_000.0
    for _ in range(20_000):
        now += generator.choice([0.0, 0.001, 0.01, 0.1, 0.4, 1.3, 2.5, 7.0, 25.0])
        key = generator.choice(["a", "b", "c", "d"])
        amount, period = (5, 2.0) if key in "ab" else (50, 30.0)
        if generator.random() < 0.5:
            assert compiled.hit(key, amount, period, now) == reference.hit(key, amount, period, now)
        else:
            cost = generator.choice([0, 1, 1, 3])
            assert compiled.step(key, amount, period, now, cost) == reference.step(key, amount, period, now, cost)
        assert len(compiled) == len(reference)


async def test_memory_counters_sweep_keys_of_ended_windows(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("fluxer_oauth.web.ratelimit.time.time", lambda: clock[0])
    counters, rate = MemoryCounters(), Rate(5, 1.0)
    for n in range(100):
        counters.step_now("global", f"ip-{n}", rate, 1)
    clock[0] = 1003.5  # two windows later: those keys count nothing
    counters.step_now("global", "fresh", rate, 1)
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


def test_an_allowed_memory_hit_states_what_the_full_step_would(monkeypatch):
    """RateLimits.hit_now answers an allowed request from the counter directly; its numbers
    must be step()'s, through a window change and the previous window's decay."""
    from fluxer_oauth.web.ratelimit import LimitState, RateLimited, RateLimits
    from tests.conftest import make_settings

    clock = [1_000_000.0]
    monkeypatch.setattr("fluxer_oauth.web.ratelimit.time.time", lambda: clock[0])
    limits = RateLimits(make_settings("sqlite://", rate_limits="on", rate_limit_token="5/10seconds"))
    rate, reference, refused = Rate(5, 10.0), PyWindowTable(), 0
    for at in (1_000_000.0, 1_000_001.0, 1_000_004.5, 1_000_012.0, 1_000_013.0, 1_000_019.9, 1_000_019.95,
               1_000_019.97):
        clock[0] = at
        expected = step(reference, "client:1", rate, at, 1)
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


def test_an_application_limited_per_hour_keeps_its_count_in_a_per_second_bucket(monkeypatch):
    """A trusted application's own limit (an override) over a longer period than its bucket's
    default: the sweeps made for the default's short-lived keys leave its count alone."""
    from fluxer_oauth.web.ratelimit import RateLimited, RateLimits
    from tests.conftest import make_settings

    clock = [1_000_000.0]
    monkeypatch.setattr("fluxer_oauth.web.ratelimit.time.time", lambda: clock[0])
    limits = RateLimits(make_settings("sqlite://", rate_limits="on", rate_limit_token="10/10seconds",
                                      rate_limit_overrides={"42": "3/hour"}))
    limits.hit_now("token", "ip:0")  # the bucket's first key: its sweeps come every ten seconds
    for _ in range(3):
        limits.hit_now("token", "client:42", client_id="42")
    for second in range(1, 120, 5):  # other clients come and go
        clock[0] = 1_000_000.0 + second
        limits.hit_now("token", f"ip:{second}")
    with pytest.raises(RateLimited):
        limits.hit_now("token", "client:42", client_id="42")
