"""PostgreSQL's capacity for the statements the group commit sends (store/hot.py,
store/redemptions.py), measured with pgbench: transactions and rows a second at k = 1, 8
and 32 rows a statement (the range a group-commit batch spans), and PostgreSQL's CPU a row.

    .venv/bin/python bench/pg_capacity.py                       # 3 rounds of 5 s, 8 clients
    .venv/bin/python bench/pg_capacity.py --rounds 1 --seconds 2  # a quick look

It makes a scratch database on the local PostgreSQL (FLUXER_TEST_POSTGRES_URL's server),
migrates it with the project's migration, seeds it (bench/seed.py's user, application and
grant; then access tokens, codes and refresh tokens with their access tokens, in bulk) and
drops it at the end. Each statement is the project's own text with its array arguments
built in SQL (bench/.work/pgbench/*.sql, written from the statements at each run):

- single-use keys (codes, refresh tokens) come from a sequence, k consecutive seeded keys a
  transaction, so no two transactions reach for the same row; the rows really spent are
  counted in the database after each run;
- new token keys are random (SHA-256 of a random UUID), "now" is the transaction's time.

Every transaction is one statement in autocommit (pgbench -n -M prepared), as the server
sends it: a write costs one commit (WAL flush), whatever k. PostgreSQL's CPU is the whole
server's (/proc, as bench/run.py), so other users of the server count in it."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.run import POSTGRES_ADMIN, WORK, cpu_seconds, service_pids  # noqa: E402

SCRIPTS = WORK / "pgbench"
BATCH_SIZES = (1, 8, 32)
LOOKUP_TOKENS = 100_000
NOW = "extract(epoch from now())::float8"


def fill(value: str, k: int) -> str:
    return f"array_fill({value}, ARRAY[{k}])"


def keys(prefix: str, first: str, k: int) -> str:
    """The k seeded keys from number ``first`` on (seeded as sha256(prefix || n))."""
    return (f"ARRAY(SELECT sha256(convert_to('{prefix}' || g, 'UTF8')) "
            f"FROM generate_series({first}, {first} + {k - 1}) AS g)")


def next_keys(prefix: str, k: int) -> str:
    """k fresh single-use keys: the next slot of the sequence."""
    return (f"ARRAY(SELECT sha256(convert_to('{prefix}' || g, 'UTF8')) FROM (SELECT nextval('capacity_slot') AS s) "
            f"AS x, generate_series(x.s * {k} + 1, x.s * {k} + {k}) AS g)")


def random_keys(k: int) -> str:
    return f"ARRAY(SELECT sha256(uuid_send(gen_random_uuid())) FROM generate_series(1, {k}))"


def random_ids(k: int) -> str:
    return f"ARRAY(SELECT (random() * 1e15)::bigint FROM generate_series(1, {k}))"


def with_arguments(sql: str, arguments: dict[int, str]) -> str:
    """The statement with each $n replaced by its SQL expression."""
    return re.sub(r"\$(\d+)\b", lambda m: f"({arguments[int(m.group(1))]})", sql)


def scripts(info: dict, k: int) -> dict[str, str]:
    """name -> pgbench script, for batches of k rows."""
    from fluxer_oauth.store import hot, redemptions
    from fluxer_oauth.store.oauth import GRANT_TOUCH_INTERVAL

    app, secret = info["application_id"], info["secret_hash"]
    if k == 1:  # the server sends a lone lookup in its one-key form
        lookup = with_arguments(hot.ACCESS_TOKEN.postgres, {1: "sha256(convert_to('l' || :r, 'UTF8'))", 2: NOW})
    else:
        lookup = with_arguments(hot.ACCESS_TOKEN.postgres_batch, {1: keys("l", ":r::bigint", k), 2: NOW})
    client_sql, _ = hot._POSTGRES_BATCHES[hot.ISSUE_CLIENT_TOKEN]
    client = with_arguments(client_sql, {
        1: random_keys(k), 2: fill(f"{app}::bigint", k), 3: fill(f"'\\x{secret}'::bytea", k), 4: random_ids(k),
        5: fill("'identify'::text", k), 6: fill(NOW, k), 7: fill(f"{NOW} + 604800", k)})

    def redemption(prefix: str, redirect_uri: str) -> dict[int, str]:
        return {1: next_keys(prefix, k), 2: fill(f"{app}::bigint", k), 3: fill(NOW, k), 4: random_keys(k),
                5: random_keys(k), 6: random_ids(k), 7: fill(f"{NOW} + 604800", k), 8: fill(f"{NOW} + 2592000", k),
                9: fill(redirect_uri, k), 10: fill("NULL::text", k), 11: fill("false", k),
                12: f"ARRAY(SELECT generate_series(0, {k - 1}))", 13: NOW, 14: f"{NOW} - {GRANT_TOUCH_INTERVAL}"}

    code = with_arguments(redemptions.POSTGRES_BATCHES[redemptions.REDEEM_CODE],
                          redemption("c", f"'{info['redirect_uri']}'::text"))
    refresh = with_arguments(redemptions.POSTGRES_BATCHES[redemptions.ROTATE_REFRESH], redemption("r", "NULL::text"))
    return {
        "lookup": f"\\set r random(1, {LOOKUP_TOKENS - k + 1})\n{lookup};\n",
        "client_credentials": client + ";\n",
        "code": code + ";\n",
        "refresh": refresh + ";\n",
        # the floor: a one-row insert and its commit, nothing else
        "commit": "INSERT INTO capacity_commit VALUES (1);\n",
    }


# --- the database -------------------------------------------------------------------------------

class Scratch:
    def __init__(self) -> None:
        self.name = f"fluxer_capacity_{secrets.token_hex(4)}"
        self.url = POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + self.name
        self.seeded = {"c": 0, "r": 0}  # single-use keys seeded, by prefix
        self.used = 0  # keys up to this number may be spent (any prefix: the sequence is shared)
        self.slot_k = 1  # keys a slot of the sequence stands for, lately

    async def admin(self, sql: str) -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    async def create(self) -> dict:
        await self.admin(f"CREATE DATABASE {self.name}")
        os.environ.update({"FLUXER_DATABASE_URL": self.url, "FLUXER_SECRET_KEY": "capacity-secret-" + "c" * 40,
                           "FLUXER_ARGON2_MEMORY_KIB": "8192", "FLUXER_ARGON2_TIME_COST": "1",
                           "FLUXER_PUBLIC_URL": "http://127.0.0.1"})
        from bench.seed import seed
        from fluxer_oauth.settings import Settings
        from fluxer_oauth.store.database import Database
        from fluxer_oauth.store.migrate import migrate

        settings = Settings()
        db = Database(settings.sqlalchemy_url)
        try:
            await migrate(db)
        finally:
            await db.close()
        with tempfile.TemporaryDirectory() as workdir:
            info = await seed(settings, Path(workdir), refresh=0, codes=0)
        connection = await asyncpg.connect(self.url)
        try:
            info["secret_hash"] = (await connection.fetchval(
                "SELECT secret_hash FROM applications WHERE id = $1", int(info["application_id"]))).hex()
            await connection.execute("CREATE SEQUENCE capacity_slot; CREATE TABLE capacity_commit (n int)")
            await connection.execute(f"""
                INSERT INTO tokens (token_hash, kind, application_id, user_id, grant_id, family_id, issue_id, scopes,
                                    created_at, expires_at, rotated)
                SELECT sha256(convert_to('l' || g, 'UTF8')), 1, {info['application_id']}, {info['user_id']},
                       {info['grant_id']}, g, g, 'identify guilds', {NOW}, {NOW} + 86400, false
                FROM generate_series(1, {LOOKUP_TOKENS}) AS g""")
        finally:
            await connection.close()
        self.info = info
        return info

    async def top_up(self, prefix: str, count: int) -> None:
        """At least ``count`` unspent single-use keys of ``prefix`` past the slots used."""
        if self.seeded[prefix] >= self.used + count:
            return
        first, last = self.seeded[prefix] + 1, self.used + count
        info = self.info
        connection = await asyncpg.connect(self.url)
        try:
            if prefix == "c":
                await connection.execute(f"""
                    INSERT INTO authorization_codes (code_hash, family_id, application_id, user_id, grant_id,
                        redirect_uri, redirect_uri_explicit, scopes, created_at, expires_at)
                    SELECT sha256(convert_to('c' || g, 'UTF8')), g, {info['application_id']}, {info['user_id']},
                           {info['grant_id']}, '{info['redirect_uri']}', true, 'identify', {NOW}, {NOW} + 86400
                    FROM generate_series({first}, {last}) AS g""")
            else:  # a refresh token and the access token issued with it
                await connection.execute(f"""
                    INSERT INTO tokens (token_hash, kind, application_id, user_id, grant_id, family_id, issue_id,
                                        scopes, created_at, expires_at, rotated)
                    SELECT sha256(convert_to(p || g, 'UTF8')), kind, {info['application_id']}, {info['user_id']},
                           {info['grant_id']}, 1000000000 + g, 1000000000 + g, 'identify guilds', {NOW},
                           {NOW} + 86400, false
                    FROM generate_series({first}, {last}) AS g, (VALUES ('r', 2), ('p', 1)) AS v(p, kind)""")
            await connection.execute("VACUUM ANALYZE " + ("authorization_codes" if prefix == "c" else "tokens"))
        finally:
            await connection.close()
        self.seeded[prefix] = last

    async def spent(self) -> dict[str, int]:
        connection = await asyncpg.connect(self.url)
        try:
            return {
                "code": await connection.fetchval("SELECT count(*) FROM authorization_codes WHERE consumed_at IS NOT NULL"),
                "refresh": await connection.fetchval("SELECT count(*) FROM tokens WHERE kind = 2 AND rotated"),
                "client_credentials": await connection.fetchval("SELECT count(*) FROM tokens WHERE grant_id IS NULL"),
                "slot": await connection.fetchval("SELECT last_value FROM capacity_slot"),
            }
        finally:
            await connection.close()

    async def next_slots(self, k: int) -> None:
        """Slots for batches of k start past every key the sequence has handed out."""
        self.used = max(self.used, ((await self.spent())["slot"] + 1) * self.slot_k)
        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute(f"SELECT setval('capacity_slot', {self.used // k + 1})")
        finally:
            await connection.close()
        self.slot_k = k

    async def drop(self) -> None:
        await self.admin(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


# --- pgbench --------------------------------------------------------------------------------------

def pgbench(url: str, database: str, script: Path, clients: int, seconds: int) -> tuple[float, int, float]:
    """Transactions a second, transactions done, and the CPU seconds of pgbench's backends
    (read from /proc every 50 ms while they run: their last 50 ms may be missed)."""
    command = ["pgbench", "-n", "-M", "prepared", "-f", str(script), "-c", str(clients), "-j", str(min(clients, 2)),
               "-T", str(seconds), url]
    # The server's hot connections plan every statement once (store/hot.py HOT_SESSION_SETTINGS).
    env = {**os.environ, "PGOPTIONS": "-c plan_cache_mode=force_generic_plan"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    backends: list[int] = []
    used: dict[int, float] = {}
    while process.poll() is None:
        if len(backends) < clients:
            backends = asyncio.run(_backends(database))
        for pid in backends:
            used[pid] = max(used.get(pid, 0.0), cpu_seconds(pid))
        time.sleep(0.05)
    stdout, stderr = process.communicate()
    failed = re.search(r"number of failed transactions: (\d+)", stdout)
    if process.returncode != 0 or (failed and int(failed.group(1))):
        raise RuntimeError(f"pgbench failed ({' '.join(command)}):\n{stdout}\n{stderr}")
    return (float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", stdout).group(1)),
            int(re.search(r"number of transactions actually processed: (\d+)", stdout).group(1)),
            sum(used.values()))


async def _backends(database: str) -> list[int]:
    connection = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        return await connection.fetchval(
            "SELECT coalesce(array_agg(pid), '{}') FROM pg_stat_activity WHERE datname = $1", database)
    finally:
        await connection.close()


STATEMENTS = ("lookup", "client_credentials", "code", "refresh", "commit")
TITLES = {
    "lookup": "(a) access-token lookup (`ACCESS_TOKEN`, batch form for k > 1)",
    "client_credentials": "(b) client-credentials checked insert (`ISSUE_CLIENT_TOKEN`)",
    "code": "(c) code redemption (`REDEEM_CODE`)",
    "refresh": "(d) refresh rotation (`ROTATE_REFRESH`)",
    "commit": "floor: one-row insert, one commit",
}


async def measure(args) -> list[str]:
    scratch = Scratch()
    postgres = service_pids("postgres")
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}  # (tx/s, rows/s, CPU µs a row)
    try:
        info = await scratch.create()
        SCRIPTS.mkdir(parents=True, exist_ok=True)
        for k in args.batch_sizes:
            for name, text in scripts(info, k).items():
                (SCRIPTS / f"{name}-k{k}.sql").write_text(text)
        for round_number in range(args.rounds):
            for k in args.batch_sizes:
                for name in args.statements:
                    if name == "commit" and k != 1:
                        continue
                    if name in ("code", "refresh"):
                        await scratch.next_slots(k)
                        await scratch.top_up(name[0], args.single_use)
                    before = await scratch.spent()
                    cpu_before, started = cpu_seconds(*postgres), time.monotonic()
                    tps, done, cpu = await asyncio.to_thread(
                        pgbench, scratch.url, scratch.name, SCRIPTS / f"{name}-k{k}.sql", args.clients, args.seconds)
                    whole = cpu_seconds(*postgres) - cpu_before
                    after = await scratch.spent()
                    if name in ("code", "refresh", "client_credentials"):
                        # the rows the database counts as written, of those the transactions sent
                        written = (after[name] - before[name]) / max(1, done * k)
                        rows = tps * k * written
                        if written < 0.99:
                            print(f"  note: {name} k={k} wrote {written:.1%} of the rows sent "
                                  "(seeded keys exhausted, or rows refused)", flush=True)
                    else:
                        rows = tps * (k if name == "lookup" else 1)
                    rows_done = max(1.0, done * rows / tps) if tps else 1.0
                    cpu_row, whole_row = cpu / rows_done * 1e6, whole / rows_done * 1e6
                    results.setdefault((name, k), []).append((tps, rows, cpu_row))
                    print(f"  round {round_number + 1} {name} k={k}: {tps:,.0f} tx/s, {rows:,.0f} rows/s, "
                          f"PostgreSQL backends {cpu_row:.1f} µs a row (whole server {whole_row:.1f}; "
                          f"{time.monotonic() - started:.1f} s)", flush=True)
    finally:
        await scratch.drop()
    lines = ["| statement | k | tx/s (rounds) | rows/s (median) | PostgreSQL backends' CPU µs a row (median) |",
             "|---|---:|---|---:|---:|"]
    for name in STATEMENTS:
        for k in args.batch_sizes:
            runs = results.get((name, k))
            if not runs:
                continue
            tx = " / ".join(f"{r[0]:,.0f}" for r in runs)
            lines.append(f"| {TITLES[name]} | {k} | {tx} | {statistics.median(r[1] for r in runs):,.0f} | "
                         f"{statistics.median(r[2] for r in runs):.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="seconds per pgbench run")
    parser.add_argument("--clients", type=int, default=8,
                        help="pgbench clients: statements in flight at once, as from this many server workers")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--statements", nargs="+", default=list(STATEMENTS), choices=STATEMENTS)
    parser.add_argument("--single-use", type=int, default=200_000,
                        help="unspent codes / refresh tokens kept seeded before each run of theirs")
    args = parser.parse_args()
    lines = asyncio.run(measure(args))
    print(f"\npgbench -n -M prepared -c {args.clients} -j {min(args.clients, 2)} -T {args.seconds}, "
          f"{args.rounds} rounds\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
