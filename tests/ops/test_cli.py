"""The operator CLI as an operator meets it, a process of its own against a real migrated
database: every command's help names what to type (no ``<bool>``, ``<str>``, ``<int>``), a
password is asked for (twice, unechoed) or read from a pipe rather than put on the command
line, ``--json`` prints one object for one thing and a list for a listing, without empty
fields, and tables on an 80-column terminal keep 19-digit ids whole. An operator can give a
locked-out user a reset link (mailed to them too when the server sends mail) or turn off the
second factor they lost."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import signal
import subprocess
import time

import pyotp
import pytest
from typer.testing import CliRunner

from fluxer_oauth import cli
from fluxer_oauth.platform import mail_links, two_factor
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import users as user_store
from tests.conftest import PASSWORD, SECRET_KEY, create_app, make_settings, query_of, register
from tests.interop.conftest import BIN
from tests.mail_server import link_in

TYPE_PLACEHOLDER = re.compile(r"<[a-z][a-z0-9_ \[\],|]*>")
SNOWFLAKE = re.compile(r"\b\d{19}\b")


def env_for(database_url: str, columns: int = 200, **extra: str) -> dict[str, str]:
    return {**os.environ, "FLUXER_DATABASE_URL": database_url, "FLUXER_SECRET_KEY": SECRET_KEY,
            "FLUXER_LOG_LEVEL": "WARNING", "FLUXER_ARGON2_TIME_COST": "1", "FLUXER_ARGON2_MEMORY_KIB": "1024",
            "FLUXER_ARGON2_PARALLELISM": "1", "COLUMNS": str(columns), **extra}


def run(database_url: str, *args: str, stdin: str = "", columns: int = 200, ok: bool = True,
        env: dict[str, str] | None = None):
    done = subprocess.run([str(BIN), *args], env=env_for(database_url, columns, **(env or {})), input=stdin,
                          capture_output=True, text=True, timeout=60)
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def run_json(database_url: str, *args: str, stdin: str = "", env: dict[str, str] | None = None):
    return json.loads(run(database_url, *args, "--json", stdin=stdin, env=env).stdout)


def password_of(database_url: str, login: str, password: str) -> bool:
    async def check():
        rt = Runtime.create(make_settings(database_url))
        try:
            async with rt.db.read() as conn:
                user = await user_store.find_by_login(conn, login)
            return await rt.passwords.verify(user.password_hash, password)
        finally:
            await rt.db.close()

    return asyncio.run(check())


def command_paths(command, path=()):
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from command_paths(sub, (*path, name))


# --- help ---------------------------------------------------------------------------------------

def test_every_commands_help_names_what_to_type_instead_of_python_types():
    root = cli.typer.main.get_command(cli.app)
    paths = list(command_paths(root))
    assert ("users", "create") in paths and ("keys", "rotate") in paths and ("apps", "redirect-uris") in paths
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(cli.app, [*path, "--help"], env={"COLUMNS": "100"}, terminal_width=100)
        assert result.exit_code == 0, (path, result.output)
        assert "--help" in result.output
        assert not TYPE_PLACEHOLDER.search(result.output), (path, result.output)
        usage = result.output.split("Usage:", 1)[1].splitlines()[0]
        assert "{" not in usage, (path, usage)
    create = runner.invoke(cli.app, ["users", "create", "--help"], env={"COLUMNS": "100"}, terminal_width=100)
    assert "USERNAME EMAIL" in create.output and "shell history" in create.output
    serve = runner.invoke(cli.app, ["serve", "--help"], env={"COLUMNS": "100"}, terminal_width=100).output
    assert "ADDRESS" in serve and "rsgi|asgi" in serve


# --- passwords ----------------------------------------------------------------------------------

def read_until(fd: int, wanted: str | None, seen: list[str], start: int, timeout: float = 30) -> int:
    """Read the terminal until ``wanted`` appears after ``start`` (None: until it closes);
    returns where the text found ends."""
    deadline = time.monotonic() + timeout
    while True:
        text = "".join(seen)
        if wanted is not None and wanted in text[start:]:
            return text.index(wanted, start) + len(wanted)
        assert time.monotonic() < deadline, f"waited for {wanted!r}, got {text!r}"
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                assert wanted is None, f"ended before {wanted!r}: {text!r}"
                return len(text)
            seen.append(chunk.decode(errors="replace"))


def run_at_a_terminal(database_url: str, args: list[str], answers: list[tuple[str, str]]) -> tuple[int, str]:
    """The CLI with a pseudo-terminal as its controlling terminal, stdin and stdout: each
    (prompt, answer) is awaited then typed. Returns the exit status and all it printed."""
    env = env_for(database_url)
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec the CLI at once
        os.execve(str(BIN), [str(BIN), *args], env)
    seen: list[str] = []
    try:
        at = 0
        for prompt, answer in answers:
            at = read_until(fd, prompt, seen, at)
            os.write(fd, answer.encode() + b"\r")
        read_until(fd, None, seen, at)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), "".join(seen)


def test_users_create_at_a_terminal_asks_for_the_password_twice_without_echoing_it(database_url):
    secret = "terminal pass 42"
    code, printed = run_at_a_terminal(database_url, ["users", "create", "tty", "tty@example.com"], [
        ("Password: ", secret), ("Repeat for confirmation: ", "something else"),  # a typo: asked again
        ("Password: ", secret), ("Repeat for confirmation: ", secret),
    ])
    assert code == 0, printed
    assert "do not match" in printed
    assert secret not in printed  # never echoed
    assert "tty@example.com" in printed
    assert password_of(database_url, "tty", secret)


def test_users_create_reads_the_password_from_a_pipe(database_url):
    created = run_json(database_url, "users", "create", "piped", "piped@example.com", stdin=" piped pass 42 \n")
    assert created["username"] == "piped"
    assert password_of(database_url, "piped", " piped pass 42 ")  # only the line ending is taken off
    assert not password_of(database_url, "piped", "piped pass 42")


def test_users_create_with_nothing_on_stdin_says_where_the_password_comes_from(database_url):
    done = run(database_url, "users", "create", "nobody", "nobody@example.com", ok=False)
    assert done.returncode == 2 and "no password" in done.stderr
    assert run_json(database_url, "users", "list") == []


def test_users_create_still_takes_password_on_the_command_line(database_url):
    run(database_url, "users", "create", "flag", "flag@example.com", "--password", "flag pass 42")
    assert password_of(database_url, "flag", "flag pass 42")


# --- --json ---------------------------------------------------------------------------------------

def test_json_is_one_object_for_one_thing_a_list_for_a_listing_and_has_no_empty_fields(database_url):
    user = run_json(database_url, "users", "create", "owner", "owner@example.com", stdin="owner pass 42\n")
    assert isinstance(user, dict) and user["username"] == "owner" and user["email"] == "owner@example.com"

    with_bot = run_json(database_url, "apps", "create", "owner", "With Bot")
    assert isinstance(with_bot, dict) and set(with_bot) == {"id", "name", "client_secret", "bot_token"}
    assert with_bot["bot_token"] and with_bot["client_secret"]
    no_bot = run_json(database_url, "apps", "create", "owner", "No Bot", "--no-bot")
    assert isinstance(no_bot, dict) and set(no_bot) == {"id", "name", "client_secret"}

    guild = run_json(database_url, "guilds", "create", "owner", "A Guild")
    assert isinstance(guild, dict) and guild["name"] == "A Guild" and guild["owner_id"] == user["id"]

    users = run_json(database_url, "users", "list")
    assert isinstance(users, list) and [u["id"] for u in users] == [user["id"]]
    apps = run_json(database_url, "apps", "list")
    assert isinstance(apps, list) and {a["id"] for a in apps} == {with_bot["id"], no_bot["id"]}
    assert run_json(database_url, "grants", "list", "owner") == []
    rotated = run_json(database_url, "keys", "rotate")
    assert set(rotated) == {"new", "replaced"} and len(rotated["new"]) == 2
    keys = run_json(database_url, "keys", "list")
    assert isinstance(keys, list) and len(keys) == 2
    for row in [user, with_bot, no_bot, guild, *users, *apps, *keys, *rotated["new"]]:
        assert all(value is not None and value != "" for value in row.values()), row
    assert "retires_at" not in keys[0]  # a current key with no successor: no retirement time


# --- tables ---------------------------------------------------------------------------------------

def test_tables_on_an_80_column_terminal_keep_snowflake_ids_whole(database_url):
    run(database_url, "users", "create", "a_rather_long_username_here", "someone.with.a.long.address@example.com",
        stdin="owner pass 42\n")
    created = run(database_url, "apps", "create", "a_rather_long_username_here",
                  "An Application With Quite A Long Name Indeed", columns=80).stdout
    app_id = SNOWFLAKE.search(created).group()
    assert "\n" not in created.split("bot_token", 1)[1].strip()  # the token on one line, whole
    run(database_url, "guilds", "create", "a_rather_long_username_here", "G", columns=80)
    users = run_json(database_url, "users", "list")

    for args, ids in ((["apps", "list"], [app_id]), (["users", "list"], [users[0]["id"]])):
        printed = run(database_url, *args, columns=80).stdout
        assert max(map(len, printed.splitlines())) <= 80, printed
        assert "…" not in printed, printed
        for snowflake in ids:
            assert len(snowflake) == 19 and snowflake in printed, printed

    run(database_url, "keys", "rotate")
    keys = run_json(database_url, "keys", "list")
    listed = run(database_url, "keys", "list", columns=80).stdout  # too wide for a table: one record per key
    assert max(map(len, listed.splitlines())) <= 80 and "…" not in listed, listed
    for key in keys:
        assert key["kid"] in listed and key["created_at"] in listed


@pytest.mark.parametrize("columns", [80, 200])
def test_a_table_that_fits_is_a_table(database_url, columns):
    run(database_url, "users", "create", "tabled", "tabled@example.com", stdin="owner pass 42\n")
    printed = run(database_url, "users", "list", columns=columns).stdout
    assert "┃ id" in printed and SNOWFLAKE.search(printed), printed


# --- redirect URIs ----------------------------------------------------------------------------------

def test_apps_redirect_uris_adds_once_and_removes(database_url):
    run(database_url, "users", "create", "dev", "dev@example.com", stdin="dev pass 42\n")
    app = run_json(database_url, "apps", "create", "dev", "App", "--redirect-uri", "https://a.example/cb")
    added = run_json(database_url, "apps", "redirect-uris", app["id"], "--add", "http://localhost:8123/callback")
    assert added == ["https://a.example/cb", "http://localhost:8123/callback"]
    again = run_json(database_url, "apps", "redirect-uris", app["id"], "--add", "http://localhost:8123/callback")
    assert again == added
    removed = run_json(database_url, "apps", "redirect-uris", app["id"], "--remove", "https://a.example/cb")
    assert removed == ["http://localhost:8123/callback"]
    bad = run(database_url, "apps", "redirect-uris", app["id"], "--add", "http://evil.example/cb", ok=False)
    assert bad.returncode == 1 and "redirect_uris" in bad.stderr
    unknown = run(database_url, "apps", "redirect-uris", "1234567890123456789", ok=False)
    assert unknown.returncode == 1 and "UNKNOWN_APPLICATION" in unknown.stderr


# --- weak passwords ---------------------------------------------------------------------------------

def test_users_create_says_why_a_password_is_too_weak_without_a_traceback(database_url):
    done = run(database_url, "users", "create", "weak", "weak@example.com", stdin="12345678\n", ok=False)
    assert done.returncode == 1
    assert "password: too easy to guess: This is a top-10 common password." in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert run_json(database_url, "users", "list") == []


# --- helping a user back into their account ------------------------------------------------------------

def smtp_env(mail_server) -> dict[str, str]:
    """The CLI's environment for sending to the test SMTP server."""
    return {f"FLUXER_{name.upper()}": str(value) for name, value in mail_server.settings().items()}


RESET_LINK = re.compile(r"https?://\S+/reset-password\?token=\S+")
NEW_PASSWORD = "a fresh passphrase for alice 42"


async def test_users_reset_password_mails_and_prints_a_link_that_works_once(database_url, client, mail_server):
    alice = await register(client, "alice")
    done = run(database_url, "users", "reset-password", "alice", env=smtp_env(mail_server))
    link = RESET_LINK.search(done.stdout).group()
    assert "mailed to alice@example.com" in done.stderr
    [mail] = await mail_server.wait_for("alice@example.com")
    assert link_in(mail, "/reset-password") == link

    token = query_of(link)["token"]
    used = await client.post("/api/v1/auth/reset", json={"token": token, "password": NEW_PASSWORD})
    assert used.is_success, used.text
    again = await client.post("/api/v1/auth/reset", json={"token": token, "password": "another passphrase 4242"})
    assert again.status_code == 400 and again.json()["code"] == "INVALID_LINK"
    assert (await client.get("/api/v1/users/@me", headers=alice.headers)).status_code == 401  # sessions ended
    login = await client.post("/api/v1/auth/login", json={"login": "alice", "password": NEW_PASSWORD})
    assert login.status_code == 200 and login.json()["token"]


async def test_users_reset_password_prints_a_working_link_when_nothing_is_mailed(database_url, client, rt,
                                                                                  mail_server):
    await register(client, "alice")
    unmailed = run_json(database_url, "users", "reset-password", "alice", "--no-mail", env=smtp_env(mail_server))
    no_smtp = run_json(database_url, "users", "reset-password", "alice")  # production without FLUXER_SMTP_URL
    assert (unmailed["mail"], no_smtp["mail"]) == ("not_sent", "unavailable")
    assert mail_server.messages_to("alice@example.com") == []
    for printed in (unmailed, no_smtp):  # a new link leaves the earlier ones valid
        user = await mail_links.reset_link_user(rt, query_of(printed["link"])["token"])
        assert user is not None and user.username == "alice"
    text = run(database_url, "users", "reset-password", "alice")
    assert RESET_LINK.search(text.stdout) and "not mailed: this server has no SMTP" in text.stderr


async def test_users_reset_password_refuses_a_disabled_user_and_a_bot(database_url, client, mail_server):
    owner = await register(client, "owner")
    bot_id = (await create_app(client, owner)).body["bot"]["id"]
    await register(client, "gone")
    run(database_url, "users", "disable", "gone")
    for who, why in ((bot_id, "is a bot"), ("gone", "is disabled")):
        done = run(database_url, "users", "reset-password", who, env=smtp_env(mail_server), ok=False)
        assert done.returncode == 1 and why in done.stderr, done.stderr
        assert not RESET_LINK.search(done.stdout + done.stderr)
    assert mail_server.received == []


async def test_users_mfa_reset_lets_the_user_sign_in_with_the_password_alone(database_url, client, rt):
    alice = await register(client, "alice")
    async with rt.db.read() as conn:
        user = await user_store.get_user(conn, int(alice.id))
    secret = two_factor.new_secret()
    await two_factor.enable(rt, user, secret=secret, code=pyotp.TOTP(secret).now(), password=PASSWORD)
    credentials = {"login": "alice", "password": PASSWORD}
    assert (await client.post("/api/v1/auth/login", json=credentials)).json()["mfa"] is True
    assert run_json(database_url, "users", "list")[0]["mfa_enabled"] is True

    done = run(database_url, "users", "mfa-reset", "alice")
    assert "two-factor sign-in is off for alice" in done.stderr
    login = await client.post("/api/v1/auth/login", json=credentials)
    assert login.status_code == 200 and login.json()["token"] and "mfa" not in login.json()
    assert run_json(database_url, "users", "list")[0]["mfa_enabled"] is False

    again = run(database_url, "users", "mfa-reset", "alice", ok=False)
    assert again.returncode == 1 and "alice does not have two-factor sign-in on" in again.stderr


async def test_users_list_shows_who_is_verified_and_has_two_factor(database_url, client, rt):
    for name in ("plain", "checked", "guarded"):
        await register(client, name)
    async with rt.db.write() as conn:
        checked = await user_store.find_by_login(conn, "checked")
        await user_store.set_user_fields(conn, checked.id, verified=True)
        guarded = await user_store.find_by_login(conn, "guarded")
    secret = two_factor.new_secret()
    await two_factor.enable(rt, guarded, secret=secret, code=pyotp.TOTP(secret).now(), password=PASSWORD)
    run(database_url, "users", "staff", "guarded")

    printed = run(database_url, "users", "list", columns=80).stdout
    assert "┃ id" in printed and max(map(len, printed.splitlines())) <= 80, printed
    status = {name: re.search(rf"│ {name}\s*│[^│]*│ ([^│]*)│", printed).group(1).strip()
              for name in ("plain", "checked", "guarded")}
    assert status == {"plain": "", "checked": "verified", "guarded": "staff mfa"}
