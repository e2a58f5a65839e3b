"""The benchmark: starts each configuration, drives it with wrk, and prints requests/s and
p50/p99 latency side by side with the limit (raw apps under the same server, over ASGI and RSGI) and the
peer (oidc-provider, one Node.js process, in-memory store).

    .venv/bin/python bench/run.py                 # full run (several minutes)
    .venv/bin/python bench/run.py --quick         # seconds: checks the harness works
    .venv/bin/python bench/run.py --write         # also writes bench/RESULTS.md

Each scenario is run alternately against ours, the limit and the peer, for several rounds,
and the median is reported, because this machine is shared and noisy. The peer is warmed
up first (its JIT needs tens of seconds), and ours gets one unmeasured run per scenario."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import requests

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent
WORK = Path(os.environ.get("FLUXER_BENCH_WORK", BENCH / ".work"))  # another for runs side by side
SECRET = "bench-secret-key-" + "b" * 40
POSTGRES_ADMIN = os.environ.get("FLUXER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FLUXER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PEER_CLIENT = ("bench", "bench-secret-bench-secret-bench-secret-123")
RAISED = "1000000000/second"

SCENARIOS = ("me", "bot_me", "client_credentials", "introspect", "refresh", "code", "code_openid")
SINGLE_USE = ("refresh", "code", "code_openid")  # each request spends what it sends
PEER_SCENARIOS = ("client_credentials", "introspect")


@dataclass
class Config:
    name: str
    database: str  # "sqlite" or "postgres"
    workers: int
    rate_limits: bool
    access_log: bool = True  # as shipped: FLUXER_LOG_LEVEL=INFO writes a line a request to stderr


CONFIGS = {
    "sqlite-1w": Config("sqlite-1w", "sqlite", 1, False),
    "sqlite-1w-nolog": Config("sqlite-1w-nolog", "sqlite", 1, False, access_log=False),
    "sqlite-1w-rl": Config("sqlite-1w-rl", "sqlite", 1, True),
    "pg-redis-2w": Config("pg-redis-2w", "postgres", 2, False),
    "pg-redis-2w-rl": Config("pg-redis-2w-rl", "postgres", 2, True),
}


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0


@dataclass
class Row:
    config: str
    scenario: str
    ours: list[Result] = field(default_factory=list)
    limit: list[Result] = field(default_factory=list)  # the raw ASGI app
    limit_rsgi: list[Result] = field(default_factory=list)  # the raw RSGI app: our interface
    peer: list[Result] = field(default_factory=list)
    # CPU seconds a request of ours, each round: our server's process tree ("ours") and, on
    # PostgreSQL, the backends of its database ("backends") and the whole PostgreSQL and
    # Redis servers ("postgres", "redis": others may be using them too)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    per_transaction: list[float] = field(default_factory=list)  # requests a PostgreSQL transaction


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- wrk ----------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unreadable wrk latency {text!r}")
    number, unit = match.groups()
    return float(number) * _UNITS[unit]


def wrk(url: str, *, duration: float, connections: int, threads: int, script: str, env: dict) -> Result:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
               "-s", str(BENCH / "lua" / script), url]
    output = subprocess.run(command, env={**os.environ, **env, "BENCH_THREADS": str(threads)},
                            capture_output=True, text=True, check=True).stdout
    try:
        return _parse_wrk(output)
    except (AttributeError, ValueError) as exc:
        raise RuntimeError(f"could not read wrk's output for {url}:\n{output}") from exc


def _parse_wrk(output: str) -> Result:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)\s*$", output, re.MULTILINE).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)\s*$", output, re.MULTILINE).group(1))  # "1.36s " has a trailing blank
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    count = int(errors.group(1)) if errors else 0
    if socket_errors:
        count += sum(int(n) for n in socket_errors.groups())
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    return Result(rps, p50, p99, count, requests)


def cpu_seconds(*pids: int) -> float:
    """User and system CPU spent so far by processes and every process under them (granian's
    workers, PostgreSQL's backends), from /proc; children that ended count once reaped."""
    total, pending = 0.0, list(pids)
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            total += sum(int(n) for n in fields[11:15]) / CLOCK_TICKS  # utime, stime, cutime, cstime
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone meanwhile
    return total


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def service_pids(name: str) -> list[int]:
    """The topmost processes called ``name`` (the postmaster, not its backends)."""
    def comm(pid) -> str:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError):
            return ""

    def parent(pid) -> int:
        try:
            return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            return 0

    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and comm(p.name) == name and comm(parent(p.name)) != name]


class CpuMeter:
    """CPU seconds a request of each process tree over one wrk run; with ``database`` (a
    PostgreSQL database of ours), also its backends' CPU a request and the requests a
    transaction of it (lookups count as transactions too: about a group commit's size)."""

    def __init__(self, trees: dict[str, list[int]], database: str | None = None) -> None:
        self.trees = {label: pids for label, pids in trees.items() if pids}
        self.database = database

    def run(self, row: Row, measured) -> Result:
        before = {label: cpu_seconds(*pids) for label, pids in self.trees.items()}
        if self.database:
            commits, backends = self.commits(), self.backends()
        result = measured()
        requests = max(1, result.requests)
        for label, pids in self.trees.items():
            row.cpu.setdefault(label, []).append((cpu_seconds(*pids) - before[label]) / requests)
        if self.database:
            # only this database's backends: the server's pools (connections made during the run count whole)
            used = sum(cpu - backends.get(pid, 0.0) for pid, cpu in self.backends().items())
            row.cpu.setdefault("backends", []).append(used / requests)
            time.sleep(1.5)  # a backend publishes its counts at most once a second, and once idle
            row.per_transaction.append(result.requests / max(1, self.commits() - commits))
        return result

    def commits(self) -> int:
        return asyncio.run(_pg_value("SELECT xact_commit FROM pg_stat_database WHERE datname = $1", self.database))

    def backends(self) -> dict[int, float]:
        pids = asyncio.run(_pg_value("SELECT array_agg(pid) FROM pg_stat_activity WHERE datname = $1",
                                     self.database)) or []
        return {pid: cpu_seconds(pid) for pid in pids}


# --- the servers ---------------------------------------------------------------------------------

class Ours:
    def __init__(self, config: Config, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.database_name = None
        self.env = {
            **os.environ,
            "FLUXER_SECRET_KEY": SECRET,
            "FLUXER_PUBLIC_URL": self.base,
            "FLUXER_RATE_LIMITS": "on" if config.rate_limits else "off",
            "FLUXER_RATE_LIMIT_TOKEN": RAISED, "FLUXER_RATE_LIMIT_REVOKE": RAISED,
            "FLUXER_RATE_LIMIT_AUTHORIZE": RAISED, "FLUXER_RATE_LIMIT_GLOBAL": RAISED,
            "FLUXER_LOG_LEVEL": "INFO" if config.access_log else "WARNING",
            "FLUXER_ARGON2_MEMORY_KIB": "8192", "FLUXER_ARGON2_TIME_COST": "1",
            "FLUXER_JANITOR_INTERVAL": "0",
        }
        if config.database == "postgres":
            self.database_name = f"fluxer_bench_{secrets.token_hex(4)}"
            asyncio.run(_pg(f"CREATE DATABASE {self.database_name}"))
            self.env["FLUXER_DATABASE_URL"] = POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + self.database_name
            self.env["FLUXER_REDIS_URL"] = REDIS_URL
            self.env["FLUXER_REDIS_PREFIX"] = f"fluxer-bench-{secrets.token_hex(4)}"
        else:
            self.env["FLUXER_DATABASE_URL"] = f"sqlite:///{workdir / 'bench.db'}"
        self.process = None

    def prepare(self, refresh: int, codes: int) -> dict:
        subprocess.run([str(VENV_BIN / "fluxer-oauth"), "migrate"], env=self.env, check=True, capture_output=True)
        out = subprocess.run([sys.executable, str(BENCH / "seed.py"), str(self.workdir), str(refresh), str(codes)],
                             env={**self.env, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True, text=True)
        self.info = json.loads(out.stdout.strip().splitlines()[-1])
        return self.info

    def add_filler(self, count: int) -> None:
        code = ("import asyncio, json, sys; sys.path.insert(0, %r); from bench.seed import add_filler; "
                "from fluxer_oauth.settings import Settings; "
                "asyncio.run(add_filler(Settings(), json.loads(sys.argv[1]), int(sys.argv[2])))" % str(ROOT))
        subprocess.run([sys.executable, "-c", code, json.dumps(self.info), str(count)], env=self.env, check=True)

    def start(self) -> None:
        log = open(self.workdir / "server.log", "ab")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "fluxer-oauth"), "serve", "--port", str(self.port), "--workers", str(self.config.workers)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_http(f"{self.base}/healthz", self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self.database_name:
            asyncio.run(_pg(f"DROP DATABASE IF EXISTS {self.database_name} WITH (FORCE)"))


async def _pg_value(sql: str, *args):
    connection = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        return await connection.fetchval(sql, *args)
    finally:
        await connection.close()


async def _pg(sql: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def start_limit(workers: int, interface: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    target = "bench.limit_app:app" if interface == "asgi" else "bench.limit_app:rsgi_app"
    process = subprocess.Popen(
        [str(VENV_BIN / "granian"), "--interface", interface, "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--no-ws", "--log-level", "warning", target],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/", process)
    return process, base


def start_peer() -> tuple[subprocess.Popen, str] | None:
    if shutil.which("node") is None:
        return None
    peer_dir = BENCH / "peer"
    if not (peer_dir / "node_modules" / "oidc-provider").exists():
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund"], cwd=peer_dir, check=True,
                       capture_output=True)
    port = free_port()
    process = subprocess.Popen(["node", "server.mjs"], cwd=peer_dir, env={**os.environ, "PORT": str(port)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/.well-known/openid-configuration", process)
    return process, base


def _basic(client_id: str, secret: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def peer_token(base: str) -> str:
    response = requests.post(f"{base}/token", auth=PEER_CLIENT, data={"grant_type": "client_credentials",
                                                                       "scope": "identify"}, timeout=10)
    return response.json()["access_token"]


def round_request(scenario: str, ours, info: dict, workdir: Path, round_number: int,
                  single_use: int) -> tuple[str, str, dict]:
    """The scenario's request for one round: single-use scenarios take the round's own slice
    of the pre-issued codes or refresh tokens."""
    url, script, env = scenario_request(scenario, ours.base, info, workdir)
    if scenario in SINGLE_USE:
        lines = Path(env["BENCH_FILE"]).read_text().splitlines()
        part = workdir / f"{scenario}-{round_number}.txt"
        part.write_text("\n".join(lines[round_number * single_use:(round_number + 1) * single_use]))
        env = {**env, "BENCH_FILE": str(part)}
    return url, script, env


# --- scenarios ------------------------------------------------------------------------------------

def scenario_request(name: str, base: str, info: dict, workdir: Path) -> tuple[str, str, dict]:
    """(url, lua script, environment) of one scenario against our server."""
    basic = _basic(info["client_id"], info["client_secret"])
    if name == "me":
        return f"{base}/api/v1/users/@me", "fixed.lua", {"BENCH_AUTH": f"Bearer {info['access_token']}"}
    if name == "bot_me":
        return f"{base}/api/v1/users/@me", "fixed.lua", {"BENCH_AUTH": f"Bot {info['bot_token']}"}
    if name == "client_credentials":
        return f"{base}/api/v1/oauth2/token", "fixed.lua", {
            "BENCH_METHOD": "POST", "BENCH_AUTH": basic, "BENCH_BODY": "grant_type=client_credentials&scope=identify"}
    if name == "introspect":
        return f"{base}/api/v1/oauth2/introspect", "fixed.lua", {
            "BENCH_METHOD": "POST", "BENCH_AUTH": basic, "BENCH_BODY": f"token={info['access_token']}"}
    if name == "refresh":
        return f"{base}/api/v1/oauth2/token", "each.lua", {
            "BENCH_AUTH": basic, "BENCH_FILE": str(workdir / "refresh.txt"),
            "BENCH_BODY": "grant_type=refresh_token&refresh_token={}"}
    if name in ("code", "code_openid"):
        from urllib.parse import quote

        return f"{base}/api/v1/oauth2/token", "each.lua", {
            "BENCH_AUTH": basic, "BENCH_FILE": str(workdir / ("codes.txt" if name == "code" else "codes_openid.txt")),
            "BENCH_BODY": f"grant_type=authorization_code&redirect_uri={quote(info['redirect_uri'], safe='')}&code={{}}"}
    raise ValueError(name)


def limit_request(name: str, base: str) -> tuple[str, str, dict]:
    """The same method and a body of the same size, against the raw ASGI app."""
    if name in ("me", "bot_me"):
        return base + "/", "fixed.lua", {}
    return base + "/", "fixed.lua", {"BENCH_METHOD": "POST", "BENCH_BODY": "grant_type=client_credentials&scope=identify"}


def peer_request(name: str, base: str, token: str) -> tuple[str, str, dict]:
    basic = _basic(*PEER_CLIENT)
    if name == "client_credentials":
        return f"{base}/token", "fixed.lua", {"BENCH_METHOD": "POST", "BENCH_AUTH": basic,
                                              "BENCH_BODY": "grant_type=client_credentials&scope=identify"}
    return f"{base}/token/introspection", "fixed.lua", {"BENCH_METHOD": "POST", "BENCH_AUTH": basic,
                                                         "BENCH_BODY": f"token={token}"}


# --- the run ---------------------------------------------------------------------------------------

def run(args) -> tuple[list[Row], str]:
    """The rows of the main table, and the paired growth table (with ``--growth``)."""
    WORK.mkdir(exist_ok=True)
    rows: list[Row] = []
    growth_table = ""
    limits: dict[tuple[int, str], tuple] = {}
    peer = None if args.no_peer else start_peer()
    peer_access = peer_token(peer[1]) if peer else None
    if peer and args.warmup:
        # Node's JIT needs tens of seconds of load to reach its pace (measured: 2.1k req/s
        # in the first 5 s of client_credentials, ~2.9k from the fifth run on): without this
        # the first configuration would be compared with a cold peer.
        for scenario in PEER_SCENARIOS:
            url, script, env = peer_request(scenario, peer[1], peer_access)
            wrk(url, script=script, env=env, duration=args.warmup, connections=args.connections, threads=args.threads)
    try:
        for config_name in args.configs:
            config = CONFIGS[config_name]
            workdir = WORK / config.name
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True)
            for interface in ("asgi", "rsgi"):
                if (config.workers, interface) not in limits:
                    limits[config.workers, interface] = start_limit(config.workers, interface)
            limit_base = {interface: limits[config.workers, interface][1] for interface in ("asgi", "rsgi")}
            ours = Ours(config, workdir)
            single_use = args.single_use * args.rounds
            info = ours.prepare(refresh=single_use, codes=single_use)
            ours.start()
            try:
                rows += measure(args, config.name, args.scenarios, ours, info, workdir, limit_base, peer, peer_access)
            finally:
                ours.cleanup()
            if args.growth and config.name == "sqlite-1w":
                growth_rows, growth_table = measure_growth(args, limit_base)
                rows += growth_rows
    finally:
        for process, _ in limits.values():
            stop(process)
        if peer:
            stop(peer[0])
    return rows, growth_table


def measure(args, label, scenarios, ours, info, workdir, limit_base, peer, peer_access) -> list[Row]:
    rows = []
    common = dict(duration=args.duration, connections=args.connections, threads=args.threads)
    trees = {"ours": [ours.process.pid]}
    if ours.config.database == "postgres":
        trees |= {"postgres": service_pids("postgres"), "redis": service_pids("redis-server")}
    meter = CpuMeter(trees, ours.database_name)
    for scenario in scenarios:
        row = Row(label, scenario)
        if args.warmup and scenario not in SINGLE_USE:
            url, script, env = scenario_request(scenario, ours.base, info, workdir)
            wrk(url, script=script, env=env, **{**common, "duration": min(args.warmup, args.duration)})
        for round_number in range(args.rounds):
            url, script, env = round_request(scenario, ours, info, workdir, round_number, args.single_use)
            row.ours.append(meter.run(row, lambda: wrk(url, script=script, env=env, **common)))
            url, script, env = limit_request(scenario, limit_base["asgi"])
            row.limit.append(wrk(url, script=script, env=env, **common))
            url, script, env = limit_request(scenario, limit_base["rsgi"])
            row.limit_rsgi.append(wrk(url, script=script, env=env, **common))
            if peer and scenario in PEER_SCENARIOS:
                url, script, env = peer_request(scenario, peer[1], peer_access)
                row.peer.append(wrk(url, script=script, env=env, **common))
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


GROWTH = (1_000, 1_000_000)  # live tokens stored: the small and the big table (--quick: smaller)


def count_label(count: int) -> str:
    return f"{count // 1_000_000}M" if count >= 1_000_000 else f"{count // 1_000}k"


@contextmanager
def side_by_side(servers: list[tuple[str, str, int]], single_use: int = 0):
    """Servers up at once for paired rounds, each (label, configuration, filler grants and
    tokens stored), with ``single_use`` codes and refresh tokens each; yields label ->
    (ours, info, workdir), and stops and cleans them all up."""
    started = {}
    try:
        for label, config_name, filler in servers:
            workdir = WORK / label
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True)
            ours = Ours(CONFIGS[config_name], workdir)
            info = ours.prepare(refresh=single_use, codes=single_use)
            if filler:
                ours.add_filler(filler)
            ours.start()
            started[label] = (ours, info, workdir)
        yield started
    finally:
        for ours, _, _ in started.values():
            ours.cleanup()


def in_turns(labels: list[str], round_number: int) -> list[str]:
    """The order of a paired round: each goes first every other round, so going first (or
    the machine drifting within a round) does not pass for a difference between them."""
    return labels if round_number % 2 == 0 else labels[::-1]


def median_ratio(base: list[Result], other: list[Result]) -> float:
    """The median of the rounds' own ratios of two paired series: a round's runs are seconds
    apart, so the machine's drift over minutes cancels within each."""
    return statistics.median(b.rps / a.rps for a, b in zip(base, other))


def measure_growth(args, limit_base) -> tuple[list[Row], str]:
    """Every scenario with 1k and with 1M grants and 1M live tokens of them stored, paired:
    two sqlite-1w servers up side by side, each round driving both in turns and then the
    limit, so that the machine slowing down between the two cannot pass for the cost of a
    bigger table. The rows, and the table of the rounds' ratios."""
    small, big = labels = [count_label(stored) for stored in args.growth_sizes]
    servers = [(f"growth-{label}", "sqlite-1w", stored) for label, stored in zip(labels, args.growth_sizes)]
    common = dict(duration=args.duration, connections=args.connections, threads=args.threads)
    rows, lines = [], []
    with side_by_side(servers, single_use=args.single_use * args.growth_rounds) as started:
        by_label = dict(zip(labels, started.values()))
        for scenario in args.scenarios:
            pair = {label: Row(f"sqlite-1w {label} grants+tokens", scenario) for label in labels}
            for ours, info, workdir in by_label.values():  # one unmeasured run each, as in measure()
                if scenario not in SINGLE_USE:
                    url, script, env = scenario_request(scenario, ours.base, info, workdir)
                    wrk(url, script=script, env=env, **{**common, "duration": min(args.warmup, args.duration)})
            for round_number in range(args.growth_rounds):
                for label in in_turns(labels, round_number):
                    ours, info, workdir = by_label[label]
                    url, script, env = round_request(scenario, ours, info, workdir, round_number, args.single_use)
                    pair[label].ours.append(wrk(url, script=script, env=env, **common))
                for interface, attribute in (("asgi", "limit"), ("rsgi", "limit_rsgi")):
                    url, script, env = limit_request(scenario, limit_base[interface])
                    result = wrk(url, script=script, env=env, **common)
                    for row in pair.values():  # the same reference for both
                        getattr(row, attribute).append(result)
            for row in pair.values():
                rows.append(row)
                print(format_row(row), flush=True)
            lines.append(f"| {scenario} | {median(pair[small].ours, 'rps'):,.0f} | {median(pair[big].ours, 'rps'):,.0f} "
                         f"| {median_ratio(pair[small].ours, pair[big].ours) - 1:+.0%} |")
    header = (f"| scenario | {small} grants+tokens req/s | {big} grants+tokens req/s | {big} against {small} "
              "(median of the rounds' ratios) |\n|---|---:|---:|---:|")
    return rows, header + "\n" + "\n".join(lines)


RL_COST_HEADER = ("| scenario | rate limits off req/s | on req/s | cost (median of the rounds' ratios) "
                  "| server CPU off µs a request | on | CPU cost |\n|---|---:|---:|---:|---:|---:|---:|")


def measure_rate_limit_cost(args) -> list[str]:
    """Rate limiting's cost, paired: sqlite-1w with limits off and on (raised above the load)
    run side by side and driven in turns each round. Beside the throughput, the server's CPU
    time a request (from /proc), which other tenants of the machine disturb less."""
    names = ["sqlite-1w", "sqlite-1w-rl"]
    common = dict(duration=args.duration, connections=args.connections, threads=args.threads)
    lines = []
    with side_by_side([(f"rl-cost-{name}", name, 0) for name in names]) as started:
        servers = dict(zip(names, started.values()))
        for scenario in ("client_credentials", "me"):
            runs = {name: [] for name in names}
            cpu = {name: [] for name in names}  # µs a request, each run
            for round_number in range(args.rl_cost_rounds):
                for name in in_turns(names, round_number):
                    ours, info, workdir = servers[name]
                    url, script, env = scenario_request(scenario, ours.base, info, workdir)
                    before = cpu_seconds(ours.process.pid)
                    result = wrk(url, script=script, env=env, **common)
                    cpu[name].append((cpu_seconds(ours.process.pid) - before) / max(1, result.requests) * 1e6)
                    runs[name].append(result)
            off, on = runs["sqlite-1w"], runs["sqlite-1w-rl"]
            cpu_off, cpu_on = statistics.median(cpu["sqlite-1w"]), statistics.median(cpu["sqlite-1w-rl"])
            print("  rounds, on/off: " + " ".join(f"{b.rps / a.rps:.2f}" for a, b in zip(off, on)), flush=True)
            lines.append(f"| {scenario} | {median(off, 'rps'):,.0f} | {median(on, 'rps'):,.0f} | "
                         f"{1 - median_ratio(off, on):.0%} | {cpu_off:.1f} | {cpu_on:.1f} | {cpu_on / cpu_off - 1:+.0%} |")
            print(lines[-1], flush=True)
    return lines


def median(results: list[Result], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in results)


def format_row(row: Row) -> str:
    ours = median(row.ours, "rps")
    text = (f"| {row.config} | {row.scenario} | {ours:,.0f} | {median(row.ours, 'p50_ms'):.2f} | "
            f"{median(row.ours, 'p99_ms'):.2f} | {sum(r.errors for r in row.ours)} | ")
    limit, limit_rsgi = median(row.limit, "rps"), median(row.limit_rsgi, "rps")
    text += f"{limit:,.0f} | {limit_rsgi:,.0f} | {ours / limit_rsgi:.0%} | "
    if row.peer:
        peer = median(row.peer, "rps")
        text += f"{peer:,.0f} | {ours / peer:.2f}× |"
    else:
        text += "— | — |"
    return text


CPU_HEADER = ("| configuration | scenario | server CPU µs a request (rounds) | req/s per core | "
              "PostgreSQL backends' CPU µs a request | whole PostgreSQL | whole Redis | "
              "requests a PostgreSQL transaction |\n|---|---|---|---:|---:|---:|---:|---:|")


def format_cpu_row(row: Row) -> str:
    """Our server's CPU a request (the median, and each round), what a core of it serves,
    the CPU of the PostgreSQL backends serving our database, and the shared services'
    whole-server CPU over the same runs (other users' included), divided the same way."""
    ours = row.cpu.get("ours", [])
    if not ours:
        return f"| {row.config} | {row.scenario} | — | — | — | — | — | — |"
    rounds = " / ".join(f"{c * 1e6:.0f}" for c in ours)
    text = f"| {row.config} | {row.scenario} | {statistics.median(ours) * 1e6:.0f} ({rounds}) | "
    text += f"{1 / statistics.median(ours):,.0f} |"
    for label in ("backends", "postgres", "redis"):
        text += f" {statistics.median(row.cpu[label]) * 1e6:.1f} |" if row.cpu.get(label) else " — |"
    text += f" {statistics.median(row.per_transaction):.1f} |" if row.per_transaction else " — |"
    return text


HEADER = ("| configuration | scenario | ours req/s | p50 ms | p99 ms | errors | limit ASGI req/s | limit RSGI req/s | "
          "of limit (RSGI) | peer req/s | vs peer |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="one short round of every scenario on sqlite-1w, of growth (1k/10k) and of the rate-limit pair")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--single-use", type=int, default=40_000, help="codes / refresh tokens per round")
    parser.add_argument("--growth", action="store_true", help="also measure with 1k and 1M stored tokens")
    parser.add_argument("--growth-rounds", type=int, default=9,
                        help="rounds of the paired growth measurement (each drives both servers and the limit)")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--warmup", type=float, default=20.0,
                        help="seconds of load on the peer per scenario before measuring (ours: at most one run)")
    parser.add_argument("--write", action="store_true", help="write bench/RESULTS-latest.md")
    parser.add_argument("--rl-cost-rounds", type=int, default=0,
                        help="also measure rate limiting's cost with paired, alternating runs (this many rounds)")
    args = parser.parse_args()
    args.growth_sizes = GROWTH
    if args.quick:  # every part of the harness once, small
        args.configs, args.rounds, args.duration, args.single_use, args.warmup = ["sqlite-1w"], 1, 1, 10_000, 0.5
        args.growth, args.growth_sizes, args.growth_rounds, args.rl_cost_rounds = True, (1_000, 10_000), 1, 1
    print(HEADER, flush=True)
    rows, growth_table = run(args)
    report = HEADER + "\n" + "\n".join(format_row(r) for r in rows) + "\n"
    measured_cpu = [r for r in rows if r.cpu]
    if measured_cpu:
        cpu_table = CPU_HEADER + "\n" + "\n".join(format_cpu_row(r) for r in measured_cpu)
        print("\n" + cpu_table, flush=True)
        report += "\n" + cpu_table + "\n"
    if growth_table:
        print("\n" + growth_table, flush=True)
        report += "\n" + growth_table + "\n"
    if args.rl_cost_rounds:
        print("\n" + RL_COST_HEADER, flush=True)
        report += "\n" + RL_COST_HEADER + "\n" + "\n".join(measure_rate_limit_cost(args)) + "\n"
    if args.write:
        (BENCH / "RESULTS-latest.md").write_text(report)
    failed = [r for r in rows if not r.ours or any(x.rps <= 0 for x in r.ours)]
    if failed:
        sys.exit(f"no throughput measured for {[(r.config, r.scenario) for r in failed]}")


if __name__ == "__main__":
    main()
