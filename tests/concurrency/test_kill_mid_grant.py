"""A server worker killed with SIGKILL in the middle of a burst of token requests (issue 22)
leaves no half-done grant, on SQLite and on PostgreSQL.

Each round seeds a fresh database straight through the store (bench/seed.py: plain and
OpenID codes, single refresh tokens), starts ``fluxer-oauth serve``, and fires every code
exchange and refresh at once from a thread pool; a request answered with tokens is, now and
then, followed by a refresh of what came back, so rotations of rotations are under way too.
Once a seeded-random number of answers has come back (plus a seeded-random few ms), the
server is killed with SIGKILL: the whole process group (one worker), or the busier of two
workers (granian, which does not respawn a failed worker, then stops the other gracefully,
so its requests under way end as a shutdown ends them). With every server process dead, the
store is read directly and, for every seeded code and refresh token, its family (the tokens
descending from it) must be whole:

- a code is unredeemed (not consumed, still live, no token in its family) or consumed with
  exactly one access + refresh pair issued at the moment it was consumed;
- a refresh token is live with nothing issued from it, or rotated (rotated and revoked)
  with exactly one new pair issued at that moment and the old access token revoked then
  too; so each family is one unbroken chain ending in exactly one live pair, and holds no
  token outside that chain;
- every request is answered with tokens or not at all (no error, from a dying worker or
  from the other one); every pair answered is in the store in its family; the presented
  code or token of every answered request is spent; the last pair a client received (and
  sent on nowhere) is the live end of its chain.

Then a restarted server must exchange an unredeemed code exactly once, accept the answered
tokens (``/users/@me``, introspection), refresh a token whose rotation was cut off, and
refuse a code consumed by a request whose answer was lost.

FLUXER_KILL_SEED and FLUXER_KILL_ROUNDS replay or lengthen the run.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from bench.seed import seed
from fluxer_oauth.core import credentials
from fluxer_oauth.store.database import Database
from fluxer_oauth.store.tables import ACCESS, REFRESH, authorization_codes, tokens
from tests.conftest import make_settings
from tests.interop.conftest import start_server, stop_server
from tests.soak.test_soak import worker_pids

pytestmark = pytest.mark.serial  # a burst with a kill timed into it

SEED = int(os.environ.get("FLUXER_KILL_SEED", "22"))
ROUNDS = int(os.environ.get("FLUXER_KILL_ROUNDS", "4"))
CODES = 150  # of each kind (plain and openid): bench/seed.py mints both
REFRESH_TOKENS = 250
THREADS = 16
FOLLOW_UP = 0.4  # chance that an answered request is followed by a refresh of its new token
MAX_STEPS = 4
SAMPLE = 8  # of each kind of credential tried again on the restarted server


@dataclass
class Step:
    presented: str  # the code or refresh token sent
    sent_at: float
    outcome: str = "lost"  # "answered", "lost" (no answer: the connection died) or "refused"
    pair: tuple[str, str] | None = None  # (access, refresh) answered
    detail: str = ""


@dataclass
class Chain:
    """One seeded credential and what the client did with it: an exchange or a refresh,
    then, perhaps, refreshes of what came back; it ends at the first request not answered."""
    kind: str  # "code" or "refresh"
    credential: str
    steps: list[Step] = field(default_factory=list)


class Burst:
    """Every chain at once from a thread pool; ``answered`` is set after the target answer."""

    def __init__(self, base: str, info: dict, target: int) -> None:
        self.base = base
        self.auth = (info["client_id"], info["client_secret"])
        self.redirect_uri = info["redirect_uri"]
        self.target = target
        self.count = 0
        self.lock = threading.Lock()
        self.answered = threading.Event()
        self.local = threading.local()

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session

    def run(self, chain: Chain, rng: random.Random) -> None:
        if chain.kind == "code":
            data = {"grant_type": "authorization_code", "code": chain.credential, "redirect_uri": self.redirect_uri}
        else:
            data = {"grant_type": "refresh_token", "refresh_token": chain.credential}
        presented = chain.credential
        while True:
            step = Step(presented, time.monotonic())
            chain.steps.append(step)
            try:
                response = self.session().post(f"{self.base}/api/v1/oauth2/token", auth=self.auth, data=data,
                                               timeout=(5, 30))
            except requests.RequestException as exc:
                step.detail = type(exc).__name__
                self.session().close()  # its pooled connections may be to a dead worker
                return
            if response.status_code != 200:
                step.outcome, step.detail = "refused", f"{response.status_code} {response.text[:200]}"
                return
            body = response.json()
            step.outcome, step.pair = "answered", (body["access_token"], body["refresh_token"])
            with self.lock:
                self.count += 1
                if self.count >= self.target:
                    self.answered.set()
            if len(chain.steps) >= MAX_STEPS or rng.random() >= FOLLOW_UP:
                return
            presented = body["refresh_token"]
            data = {"grant_type": "refresh_token", "refresh_token": presented}


def _pids_gone(pids: list[int], timeout: float = 10) -> None:
    """Wait until none of ``pids`` runs any more (gone or a zombie)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError, IndexError):
                break
            if state in ("Z", "X"):
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"process {pid} still alive after SIGKILL")


def _all_workers_started(log: Path, workers: int, timeout: float = 20) -> None:
    """start_server returns once one worker answers; the others may still be starting (and
    granian loses a stop sent to a worker before it has started: the other would never stop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        if all(f"Started worker-{n} runtime" in text for n in range(1, workers + 1)):
            return
        time.sleep(0.05)
    raise AssertionError(f"not every worker started: {log.read_text()}")


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _kill_group(process) -> None:
    """SIGKILL the server and every worker (they share its session), and wait till all are dead."""
    pids = [process.pid, *worker_pids(process)]
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)
    _pids_gone(pids)


async def _snapshot(url: str) -> tuple[list[dict], list[dict]]:
    db = Database(make_settings(url).sqlalchemy_url)
    try:
        async with db.read() as conn:
            codes = [dict(row._mapping) for row in (await conn.execute(select(authorization_codes))).all()]
            rows = [dict(row._mapping) for row in (await conn.execute(select(tokens))).all()]
    finally:
        await db.close()
    return codes, rows


def _key(token: str) -> bytes:
    return bytes(credentials.stored_token_key(token))


class Store:
    """The codes and tokens as the store holds them after the kill, by family."""

    def __init__(self, codes: list[dict], rows: list[dict]) -> None:
        self.codes = {bytes(code["code_hash"]): code for code in codes}
        self.tokens = {bytes(row["token_hash"]): row for row in rows}
        self.families: dict[int, list[dict]] = defaultdict(list)
        for row in rows:
            self.families[row["family_id"]].append(row)

    def code(self, code: str) -> dict:
        return self.codes[credentials.sha256(code)]

    def token(self, token: str) -> dict | None:
        return self.tokens.get(_key(token))

    def spent(self, chain: Chain, presented: str) -> bool:
        if chain.kind == "code" and presented == chain.credential:
            return self.code(presented)["consumed_at"] is not None
        row = self.token(presented)
        return row is not None and bool(row["rotated"])

    def family_of(self, chain: Chain) -> int:
        """The family of the chain's seeded credential."""
        return (self.code(chain.credential) if chain.kind == "code" else self.token(chain.credential))["family_id"]


def _check_family(store: Store, chain: Chain, at: float) -> tuple[list[str], list[dict]]:
    """What is half done in the family of ``chain``'s seeded credential, and its chain of
    issues (each {ACCESS: row, REFRESH: row}), root first, the live one last."""
    problems: list[str] = []
    name = f"{chain.kind} {chain.credential[:12]}"
    family = store.families.get(store.family_of(chain), [])
    issues: dict[int, dict[int, dict]] = defaultdict(dict)
    for row in family:
        if row["kind"] in issues[row["issue_id"]]:
            problems.append(f"{name}: issue {row['issue_id']} has two tokens of kind {row['kind']}")
        issues[row["issue_id"]][row["kind"]] = row
    if chain.kind == "code":
        code = store.code(chain.credential)
        spent_at = code["consumed_at"]
        if spent_at is None and code["expires_at"] <= at:
            problems.append(f"{name}: unredeemed but no longer redeemable")
        root_issue = None
        walk: list[dict] = []
    else:
        root = store.token(chain.credential)
        root_issue = root["issue_id"]
        walk = [issues[root_issue]]
        if set(issues[root_issue]) != {REFRESH}:
            problems.append(f"{name}: the seeded refresh token's issue changed: {sorted(issues[root_issue])}")
        spent_at = root["revoked_at"] if root["rotated"] else None
        if root["revoked_at"] is not None and not root["rotated"]:
            problems.append(f"{name}: revoked without being rotated")
    by_time: dict[float, list[int]] = defaultdict(list)
    for issue_id, pair in issues.items():
        if issue_id == root_issue:
            continue
        if set(pair) != {ACCESS, REFRESH}:
            problems.append(f"{name}: issue {issue_id} is not an access + refresh pair: {sorted(pair)}")
            continue
        if pair[ACCESS]["created_at"] != pair[REFRESH]["created_at"]:
            problems.append(f"{name}: issue {issue_id}'s access and refresh were made at different times")
        by_time[pair[REFRESH]["created_at"]].append(issue_id)
    seen = {root_issue} if root_issue is not None else set()
    while spent_at is not None:  # the spent credential's successor: issued at the moment it was spent
        successors = by_time.get(spent_at, [])
        if len(successors) != 1:
            problems.append(f"{name}: spent at {spent_at} with {len(successors)} pairs issued then")
            break
        previous, successor = (walk[-1] if walk else {}), issues[successors[0]]
        if ACCESS in previous and previous[ACCESS]["revoked_at"] != spent_at:
            problems.append(f"{name}: the access token of a rotated pair was not revoked with the rotation")
        seen.add(successors[0])
        walk.append(successor)
        refresh = successor[REFRESH]
        if refresh["revoked_at"] is not None and not refresh["rotated"]:
            problems.append(f"{name}: a refresh token revoked without being rotated")
        spent_at = refresh["revoked_at"] if refresh["rotated"] else None
    if not problems:
        tip = walk[-1] if walk else {}
        if any(row["revoked_at"] is not None for row in tip.values()):
            problems.append(f"{name}: the last pair of its chain is revoked")
        if set(issues) - seen:
            problems.append(f"{name}: pairs outside its chain: {sorted(set(issues) - seen)}")
    return problems, walk


def _check_store(store: Store, chains: list[Chain], known_families: set[int], at: float,
                 killed_at: float) -> tuple[list[str], dict]:
    problems: list[str] = []
    stats = defaultdict(int)
    for family_id, rows in store.families.items():
        if family_id not in known_families:
            problems.append(f"family {family_id} descends from no seeded credential: {len(rows)} tokens")
    for chain in chains:
        found, walk = _check_family(store, chain, at)
        problems += found
        if found:
            continue
        name = f"{chain.kind} {chain.credential[:12]}"
        family_id = store.family_of(chain)
        if chain.kind == "code":
            stats["codes redeemed" if walk else "codes unredeemed"] += 1
        stats["rotations"] += max(0, len(walk) - 1)
        for step in chain.steps:
            if step.outcome == "refused":
                problems.append(f"{name}: refused: {step.detail}")
            elif step.outcome == "answered":
                access, refresh = (store.token(token) for token in step.pair)
                if access is None or refresh is None:
                    problems.append(f"{name}: a pair answered to the client is not in the store")
                elif not (access["family_id"] == refresh["family_id"] == family_id
                          and access["issue_id"] == refresh["issue_id"]):
                    problems.append(f"{name}: a pair answered to the client is not one issue of its family")
                if not store.spent(chain, step.presented):
                    problems.append(f"{name}: answered, but what it presented is not spent")
            elif step.sent_at < killed_at:  # in flight when the worker died (or sent to it)
                stats["in flight, committed" if store.spent(chain, step.presented) else "in flight, not committed"] += 1
        last = chain.steps[-1] if chain.steps else None
        if last is not None and last.outcome == "answered":
            tip = walk[-1]
            if _key(last.pair[1]) != bytes(tip[REFRESH]["token_hash"]):
                problems.append(f"{name}: the last pair answered is not the live end of its chain")
    return problems, dict(stats)


def _after_restart(base: str, info: dict, store: Store, chains: list[Chain], killed_at: float,
                   rng: random.Random) -> tuple[list[str], dict]:
    """A restarted server on the store the kill left: what it must still accept and refuse.
    Credentials whose request was in flight at the kill are tried first."""
    problems: list[str] = []
    auth = (info["client_id"], info["client_secret"])
    session = requests.Session()

    def token(data: dict) -> requests.Response:
        return session.post(f"{base}/api/v1/oauth2/token", auth=auth, data=data, timeout=30)

    def exchange(code: str) -> requests.Response:
        return token({"grant_type": "authorization_code", "code": code, "redirect_uri": info["redirect_uri"]})

    def sample(items: list[tuple[bool, str]]) -> list:
        """Up to SAMPLE of (in flight at the kill, item): those in flight first."""
        rng.shuffle(items)
        return [item for _, item in sorted(items, key=lambda pair: not pair[0])[:SAMPLE]]

    def cut(step: Step) -> bool:
        return step.outcome == "lost" and step.sent_at < killed_at

    codes = [c for c in chains if c.kind == "code"]
    unredeemed = [(bool(c.steps) and cut(c.steps[0]), c.credential) for c in codes
                  if store.code(c.credential)["consumed_at"] is None]
    answered = [(False, c.steps[-1].pair) for c in chains if c.steps and c.steps[-1].outcome == "answered"]
    cut_rotations = [(cut(s), s.presented) for c in chains for s in c.steps
                     if s.outcome == "lost" and (c.kind == "refresh" or s is not c.steps[0])
                     and not store.spent(c, s.presented)]
    lost_codes = [(True, c.credential) for c in codes if c.steps and cut(c.steps[0])
                  and store.code(c.credential)["consumed_at"] is not None]

    for access, refresh in sample(answered):
        me = session.get(f"{base}/api/v1/users/@me", headers={"Authorization": f"Bearer {access}"}, timeout=30)
        if me.status_code != 200:
            problems.append(f"an access token answered before the kill: /users/@me {me.status_code}")
        seen = session.post(f"{base}/api/v1/oauth2/introspect", auth=auth, data={"token": refresh}, timeout=30)
        if not seen.json().get("active"):
            problems.append(f"a refresh token answered before the kill is not active: {seen.text[:200]}")
    for code in sample(unredeemed):
        first, second = exchange(code), exchange(code)
        if first.status_code != 200:
            problems.append(f"an unredeemed code was refused: {first.status_code} {first.text[:200]}")
        if second.status_code != 400 or second.json().get("error") != "invalid_grant":
            problems.append(f"an unredeemed code was exchanged twice: {second.status_code} {second.text[:200]}")
    for refresh in sample(cut_rotations):
        again = token({"grant_type": "refresh_token", "refresh_token": refresh})
        if again.status_code != 200:
            problems.append(f"a refresh token whose rotation was cut off was refused: {again.text[:200]}")
    # Last: refusing a spent code ends its family (replay detection).
    for code in sample(lost_codes)[:2]:
        again = exchange(code)
        if again.status_code != 400:
            problems.append(f"a code consumed before the kill was exchanged again: {again.status_code}")
    tried = {"answered pairs": min(SAMPLE, len(answered)), "unredeemed codes": min(SAMPLE, len(unredeemed)),
             "of them cut off in flight": min(SAMPLE, sum(flight for flight, _ in unredeemed)),
             "cut rotations": min(SAMPLE, len(cut_rotations)),
             "of them in flight": min(SAMPLE, sum(flight for flight, _ in cut_rotations)),
             "codes consumed, answer lost": min(2, len(lost_codes))}
    return problems, tried


def _round(tmp_path: Path, backend, number: int) -> dict:
    rng = random.Random(f"{SEED}-{number}")  # the kill's timing: the same for the round whatever came before
    one_worker_of_two = number % 2 == 1
    directory = tmp_path / f"round-{number}"
    directory.mkdir()
    url = backend.new_database(directory)
    processes = []
    try:
        info = asyncio.run(seed(make_settings(url), directory, refresh=REFRESH_TOKENS, codes=CODES))
        codes = [*(directory / "codes.txt").read_text().split(), *(directory / "codes_openid.txt").read_text().split()]
        refresh_tokens = (directory / "refresh.txt").read_text().split()
        chains = [Chain("code", code) for code in codes] + [Chain("refresh", token) for token in refresh_tokens]
        rng.shuffle(chains)
        (directory / "first").mkdir()
        workers = 2 if one_worker_of_two else 1
        process, base = start_server(directory / "first", url, workers=workers)
        processes.append(process)
        _all_workers_started(directory / "first" / "server.log", workers)

        burst = Burst(base, info, target=rng.randint(len(chains) // 10, len(chains) * 6 // 10))
        jitter = rng.uniform(0, 0.02)
        chain_rngs = [random.Random(rng.random()) for _ in chains]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            futures = [pool.submit(burst.run, chain, chain_rng) for chain, chain_rng in zip(chains, chain_rngs)]
            burst.answered.wait(timeout=30)
            # The worker killed: the server's only one, or the busier of two (the kernel may
            # have handed every connection of the burst to one of them).
            pids = worker_pids(process)
            victim = max(pids, key=_cpu_ticks)
            time.sleep(jitter)
            killed_at = time.monotonic()
            if one_worker_of_two:
                os.kill(victim, signal.SIGKILL)
            else:
                os.killpg(process.pid, signal.SIGKILL)  # the server and its worker
            answered_before_kill = burst.count
            _pids_gone([victim])
            for future in futures:
                future.result()
        burst_seconds = time.monotonic() - started
        answered_after_kill = burst.count - answered_before_kill
        _kill_group(process)  # the rest, idle now: nothing runs while the store is read

        codes_rows, token_rows = asyncio.run(_snapshot(url))
        store = Store(codes_rows, token_rows)
        known = {code["family_id"] for code in codes_rows}
        known |= {store.token(token)["family_id"] for token in refresh_tokens}
        known.add(store.token(info["access_token"])["family_id"])
        problems, stats = _check_store(store, chains, known, time.time(), killed_at)
        report = {"round": number, "kill": "one worker of two" if one_worker_of_two else "whole server",
                  "answered before kill": answered_before_kill, "answered after kill": answered_after_kill,
                  "burst seconds": round(burst_seconds, 2), **stats}
        print(f"\nkill round: {report}")
        assert not problems, f"half-done grants after the kill (seed {SEED}, round {number}): {problems[:10]}"
        assert answered_before_kill >= burst.target, report  # the kill came mid-burst, not after it
        in_flight = stats.get("in flight, committed", 0) + stats.get("in flight, not committed", 0)
        assert in_flight > 0, report  # ... with requests under way

        (directory / "restarted").mkdir()
        restarted, base = start_server(directory / "restarted", url)
        processes.append(restarted)
        problems, tried = _after_restart(base, info, store, chains, killed_at,
                                         random.Random(f"{SEED}-{number}-restart"))
        assert not problems, f"after the restart (seed {SEED}, round {number}): {problems[:10]}"
        print(f"restarted, tried again: {tried}")
        return {**report, "tried after restart": tried}
    finally:
        for process in processes:
            stop_server(process)
        backend.drop_database(url)


def test_a_killed_worker_leaves_no_half_done_code_or_rotation(tmp_path, backend):
    for number in range(ROUNDS):
        _round(tmp_path, backend, number)
