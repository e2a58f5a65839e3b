"""The fluxer-oauth command: serve, migrate, demo (and operator tools: users, apps, guilds,
grants, signing keys, the janitor)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import tempfile

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from fluxer_oauth.settings import ConfigurationError, Settings

# --- help that says what to type --------------------------------------------------------------
# Typer's help shows each parameter's Python type: "<bool>" beside every flag (--help, --json),
# "<str>" beside every argument. These classes make a flag show nothing (it takes no value) and
# every other parameter its metavar: the name given where it is declared, else its own name in
# capitals. tests/ops/test_cli.py runs every command's --help and checks.


class _Argument(TyperArgument):
    def display_type_rich(self, ctx):  # the metavar in the name column says it all
        return None

    def _usage_display_name(self) -> str:  # USER, [QUERY]: click's usual usage line
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


def _name_parameters(params) -> None:
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""
        elif isinstance(param, TyperOption) and param.metavar is None:
            param.metavar = (param.name or "value").upper()
        elif isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = (param.name or "value").upper()
            if type(param) is TyperArgument:
                param.__class__ = _Argument


class _NamedParameters:
    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            _name_parameters([option])
        return option


class _Command(_NamedParameters, TyperCommand):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _name_parameters(self.params)


class _Group(_NamedParameters, TyperGroup):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _name_parameters(self.params)


class _Typer(typer.Typer):
    def __init__(self, **kwargs) -> None:
        super().__init__(cls=_Group, **kwargs)

    def command(self, *args, **kwargs):
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


app = _Typer(help="Fluxer OAuth2 server", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


def _settings() -> Settings:
    try:
        settings = Settings()
        settings.secret  # noqa: B018  (fails early without a key outside dev mode)
        return settings
    except (ConfigurationError, ValueError) as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2)


async def _migrate(settings: Settings) -> None:
    from fluxer_oauth.store.database import Database
    from fluxer_oauth.store.migrate import migrate

    db = Database(settings.sqlalchemy_url)
    try:
        await migrate(db)
    finally:
        await db.close()


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    settings = _settings()
    asyncio.run(_migrate(settings))
    console.print("[green]schema is up to date[/green]")


@app.command()
def demo(as_json: bool = typer.Option(False, "--json", help="print the demo credentials as JSON")) -> None:
    """Load demo data (idempotent) and print the demo login and an authorize URL."""
    from fluxer_oauth.platform.demo import load_demo
    from fluxer_oauth.runtime import Runtime

    settings = _settings()

    async def run():
        await _migrate(settings)
        rt = Runtime.create(settings, exclusive_worker_id=True)
        try:
            return await load_demo(rt)
        finally:
            await rt.db.close()

    info = asyncio.run(run())
    if as_json:
        print(json.dumps(_present(dataclasses.asdict(info))))
        return
    print(f"Demo login:      {info.login} / {info.password}")
    print(f"Demo client_id:  {info.client_id}")
    print(f"Demo secret:     {info.client_secret}")
    print(f"Redirect URI:    {info.redirect_uri}")
    print(f"Open this URL:   {info.authorize_url}")
    sys.stdout.flush()


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", metavar="ADDRESS", help="address to listen on"),
    port: int = typer.Option(8080, help="port to listen on"),
    workers: int = typer.Option(1, min=1, max=64, metavar="N", help="worker processes"),
    interface: str = typer.Option(
        "rsgi", metavar="rsgi|asgi",
        help="granian interface: rsgi (faster on the hot paths) or asgi (the same answers)"),
) -> None:
    """Serve the API and pages with granian."""
    from granian import Granian
    from granian.constants import Interfaces

    _settings()
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker counts for itself; /metrics adds up what they all wrote here.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fluxer-metrics-")
    factories = {"rsgi": ("fluxer_oauth.app:create_rsgi_app", Interfaces.RSGI),
                 "asgi": ("fluxer_oauth.app:create_app", Interfaces.ASGI)}
    if interface not in factories:
        raise typer.BadParameter("must be rsgi or asgi", param_hint="--interface")
    target, granian_interface = factories[interface]
    console.print(f"serving on http://{host}:{port} with {workers} worker(s) ({interface})")
    Granian(
        target, address=host, port=port, interface=granian_interface,
        workers=workers, factory=True, log_access=False, websockets=False,
        # A worker that dies (the OOM killer, a crash) is replaced; without this granian
        # stops every other worker too and the node goes down.
        respawn_failed_workers=True,
    ).serve()


# --- operator tools ---------------------------------------------------------------------------

users_app = _Typer(help="Manage users", no_args_is_help=True)
apps_app = _Typer(help="Manage applications", no_args_is_help=True)
guilds_app = _Typer(help="Manage guilds", no_args_is_help=True)
grants_app = _Typer(help="Inspect and revoke grants", no_args_is_help=True)
keys_app = _Typer(help="OpenID Connect signing keys", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(apps_app, name="apps")
app.add_typer(guilds_app, name="guilds")
app.add_typer(grants_app, name="grants")
app.add_typer(keys_app, name="keys")

JSON_OPTION = typer.Option(False, "--json", help="print JSON for scripts")
USER_ARGUMENT = typer.Argument(..., metavar="USER", help="id, username or email")
OWNER_ARGUMENT = typer.Argument(..., metavar="OWNER", help="owner's id, username or email")
APPLICATION_ARGUMENT = typer.Argument(..., metavar="APPLICATION_ID")


def _with_runtime(work):
    """Run ``work(rt)`` against the configured database; API errors become exit code 1."""
    from fluxer_oauth.core.errors import ApiError
    from fluxer_oauth.runtime import Runtime
    from fluxer_oauth.store.errors import StoreUnavailable

    settings = _settings()

    async def run():
        rt = Runtime.create(settings, exclusive_worker_id=True)
        try:
            return await work(rt)
        finally:
            await rt.db.close()

    try:
        return asyncio.run(run())
    except ApiError as exc:
        console.print(f"[red]{exc.code}:[/red] {exc.message}")
        for error in exc.details.get("errors", []):
            console.print(f"  {error['path']}: {error['message']}")
        raise typer.Exit(1)
    except StoreUnavailable:
        console.print("[red]SERVICE_UNAVAILABLE:[/red] the database is unreachable")
        raise typer.Exit(1)


async def _resolve_user(rt, who: str):
    from fluxer_oauth.core.errors import ApiError
    from fluxer_oauth.core.ids import parse_snowflake
    from fluxer_oauth.store import users as user_store

    async with rt.db.read() as conn:
        user = None
        user_id = parse_snowflake(who)
        if user_id is not None:
            user = await user_store.get_user(conn, user_id)
        if user is None:
            user = await user_store.find_by_login(conn, who)
    if user is None:
        raise ApiError(404, "UNKNOWN_USER", f"no user {who!r}")
    return user


def _application_id(value: str) -> int:
    from fluxer_oauth.core.ids import parse_snowflake

    application_id = parse_snowflake(value)
    if application_id is None:
        console.print(f"[red]not an application id:[/red] {value}")
        raise typer.Exit(2)
    return application_id


# Free text may wrap in a table; every other cell (ids, secrets, tokens, key ids, emails,
# times) is copied from there, so it is never broken or cut.
WRAPPING_COLUMNS = frozenset({"name", "application", "scopes"})


def _present(row: dict) -> dict:
    """The fields that have a value: --json leaves out the empty ones (no bot, never used)."""
    return {key: value for key, value in row.items() if value is not None and value != ""}


def _cell(row: dict, column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value)


def _records(rows: list[dict], columns: list[str], title: str) -> None:
    """One ``column  value`` line per field, a blank line between rows: for one object, and
    for tables too wide for the terminal."""
    width = max(map(len, columns))
    print(title)
    for index, row in enumerate(rows):
        if index:
            print()
        for column in columns:
            if _cell(row, column):
                print(f"{column.ljust(width)}  {_cell(row, column)}")
    sys.stdout.flush()


def _output(rows: list[dict], columns: list[str], as_json: bool, title: str) -> None:
    """A list: a JSON array, or a table that fits the terminal (else one record per row)."""
    if as_json:
        print(json.dumps([_present(row) for row in rows], indent=2))
        return
    out = Console()
    table = Table(title=title)
    for column in columns:
        if column in WRAPPING_COLUMNS:
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*[_cell(row, column) for column in columns])
    needed = Measurement.get(out, out.options.update_width(1_000_000), table).minimum
    if needed > out.width:
        _records(rows, columns, title)
    else:
        out.print(table)


def _output_one(row: dict, columns: list[str], as_json: bool, title: str) -> None:
    """One object: a JSON object, or one ``field  value`` line per field."""
    if as_json:
        print(json.dumps(_present(row), indent=2))
        return
    _records([row], columns, title)


def _new_password(given: str | None) -> str:
    """--password if given; else asked twice, unechoed, at a terminal; else one line of stdin."""
    if given is not None:
        return given
    if sys.stdin.isatty():
        return typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    line = sys.stdin.readline()
    if not line:
        console.print("[red]no password:[/red] type it at a terminal, or pipe it as one line on stdin")
        raise typer.Exit(2)
    return line.removesuffix("\n").removesuffix("\r")


@users_app.command("create")
def users_create(
    username: str, email: str,
    password: str | None = typer.Option(
        None, "--password",
        help="the password (it lands in your shell history: leave it out to be asked for it, "
             "or pipe it as one line on stdin)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a user account. Without --password it asks for the password twice, unechoed, or,
    when standard input is not a terminal, reads it as one line from there, as in
    printf '%s\\n' "$PASSWORD" | fluxer-oauth users create NAME EMAIL."""
    from fluxer_oauth.platform import accounts

    password = _new_password(password)

    async def work(rt):
        return accounts.user_json(await accounts.create_user(rt, username, email, password), with_email=True)

    user = _with_runtime(work)
    _output_one(user, ["id", "username", "discriminator", "email"], as_json, "created")


@users_app.command("list")
def users_list(query: str = typer.Argument("", help="username or email prefix"),
               limit: int = typer.Option(50, min=1, max=1000, metavar="N"), as_json: bool = JSON_OPTION) -> None:
    """List users. The status column names what is on: staff, disabled, verified (the email
    address), mfa (two-factor sign-in)."""
    from fluxer_oauth.platform.admin import admin_user_json
    from fluxer_oauth.store import users as user_store

    async def work(rt):
        async with rt.db.read() as conn:
            return [admin_user_json(row) for row in await user_store.search_users(conn, query, limit)]

    users = _with_runtime(work)
    if not as_json:  # the yes/no fields in one narrow column, so the table still fits 80 columns
        users = [{**row, "status": " ".join(label for label, on in (
            ("staff", row["staff"]), ("disabled", row["disabled"]), ("verified", row["verified"]),
            ("mfa", row["mfa_enabled"])) if on)} for row in users]
    _output(users, ["id", "username", "email", "status"], as_json, "users")


@users_app.command("staff")
def users_staff(user: str = USER_ARGUMENT,
                remove: bool = typer.Option(False, "--remove", help="take the staff flag away")) -> None:
    """Mark a user as staff (may grant the admin scope and use the admin API)."""
    from fluxer_oauth.platform import admin

    async def work(rt):
        target = await _resolve_user(rt, user)
        await admin.set_staff(rt, None, target.id, not remove)
        return target

    target = _with_runtime(work)
    console.print(f"{target.username} is {'no longer ' if remove else ''}staff")


@users_app.command("disable")
def users_disable(user: str = USER_ARGUMENT) -> None:
    """Disable a user: every session, grant and token ends at once."""
    from fluxer_oauth.platform import admin

    async def work(rt):
        target = await _resolve_user(rt, user)
        await admin.set_user_disabled(rt, None, target.id, True)
        return target

    console.print(f"{_with_runtime(work).username} is disabled")


# How long ``users reset-password`` waits for its mail to be delivered, retries included.
MAIL_WAIT_SECONDS = 20.0


@users_app.command("reset-password")
def users_reset_password(
    user: str = USER_ARGUMENT,
    no_mail: bool = typer.Option(False, "--no-mail", help="only print the link: mail nothing"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Make a password reset link for a user and print it; it is mailed to their address too
    when this server sends mail (FLUXER_SMTP_URL; dev mode writes it to the log). The link
    works once, for FLUXER_PASSWORD_RESET_TTL; using it ends the user's sessions. Give it only
    to the account's owner, once you know it is them."""
    from fluxer_oauth.core.errors import ApiError
    from fluxer_oauth.ops.logging import configure as configure_logging
    from fluxer_oauth.platform import mail_links
    from fluxer_oauth.web import mails

    settings = _settings()
    configure_logging(settings.log_level)  # delivery failures are logged: show them

    async def work(rt):
        target = await _resolve_user(rt, user)
        if target.bot:
            raise ApiError(400, "USER_IS_BOT", f"{target.username} is a bot: it has no password to reset")
        if target.disabled_at is not None:
            raise ApiError(400, "USER_DISABLED", f"{target.username} is disabled: a new password would not "
                                                 "let them sign in")
        if not target.email:
            raise ApiError(400, "NO_EMAIL", f"{target.username} has no email address")
        mails.install(rt)
        sent_before = _mail_count("password_reset", "sent")
        try:
            link = await mail_links.send_reset_link(rt, target, actor_id=None, mail=not no_mail)
        finally:
            await rt.mail.close(timeout=MAIL_WAIT_SECONDS)  # deliver it (with retries) before exiting
        if no_mail:
            outcome = "not_sent"
        elif not rt.settings.mail_configured:
            outcome = "logged" if rt.settings.dev else "unavailable"
        else:
            outcome = "sent" if _mail_count("password_reset", "sent") > sent_before else "failed"
        return target, link, outcome

    target, link, outcome = _with_runtime(work)
    if as_json:
        print(json.dumps({"user_id": str(target.id), "username": target.username, "email": target.email,
                          "link": link, "expires_in": settings.password_reset_ttl, "mail": outcome}, indent=2))
        return
    minutes = max(1, settings.password_reset_ttl // 60)
    print(f"Password reset link for {target.username} (works once, for {minutes} minutes):")
    print(link)
    sys.stdout.flush()
    console.print({
        "sent": f"mailed to {target.email}",
        "logged": "not mailed: dev mode without FLUXER_SMTP_URL wrote the mail to the log",
        "unavailable": "not mailed: this server has no SMTP (FLUXER_SMTP_URL); give the link to the user yourself",
        "not_sent": "not mailed (--no-mail)",
        "failed": "[red]not mailed:[/red] the SMTP server did not take the mail (see the log); "
                  "give the link to the user yourself",
    }[outcome])


def _mail_count(kind: str, outcome: str) -> float:
    """Mail of ``kind`` this process settled with ``outcome`` (ops.metrics.MAIL)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("fluxer_mail_total", {"kind": kind, "outcome": outcome}) or 0.0


@users_app.command("mfa-reset")
def users_mfa_reset(user: str = USER_ARGUMENT) -> None:
    """Turn two-factor sign-in off for a user who lost both their authenticator and their
    recovery codes: they sign in with their password alone, and can turn it on again in their
    settings. Make sure it is the account's owner asking: this removes their second factor."""
    from fluxer_oauth.core.errors import ApiError
    from fluxer_oauth.platform import two_factor

    async def work(rt):
        target = await _resolve_user(rt, user)
        if not target.mfa_enabled:
            raise ApiError(400, "MFA_NOT_ENABLED", f"{target.username} does not have two-factor sign-in on: "
                                                   "nothing to reset")
        await two_factor.operator_reset(rt, target)
        return target, bool(rt.settings.require_staff_mfa and target.staff)

    target, staff_access_ended = _with_runtime(work)
    console.print(f"two-factor sign-in is off for {target.username}: they sign in with their password alone "
                  "and can turn it on again in their settings")
    if staff_access_ended:
        console.print("their admin-scope grants ended: FLUXER_REQUIRE_STAFF_MFA keeps them from staff work until "
                      "they turn two-factor sign-in on again")


@apps_app.command("create")
def apps_create(owner: str = OWNER_ARGUMENT, name: str = typer.Argument(...),
                redirect_uri: list[str] = typer.Option([], "--redirect-uri", metavar="URI", help="may be repeated"),
                bot: bool = typer.Option(True, "--bot/--no-bot", help="give it a bot user"),
                as_json: bool = JSON_OPTION) -> None:
    """Create an application; prints its client secret (and bot token) once."""
    from fluxer_oauth.platform import applications

    async def work(rt):
        return await applications.create(rt, await _resolve_user(rt, owner), name=name, redirect_uris=redirect_uri,
                                         bot=bot)

    created = _with_runtime(work)
    row = {"id": created["id"], "name": created["name"], "client_secret": created.get("client_secret"),
           "bot_token": (created.get("bot") or {}).get("token")}
    _output_one(row, ["id", "name", "client_secret", "bot_token"], as_json, "created (secrets shown once)")


@apps_app.command("list")
def apps_list(limit: int = typer.Option(200, min=1, max=1000, metavar="N"), as_json: bool = JSON_OPTION) -> None:
    """List every application."""
    from fluxer_oauth.platform import admin

    async def work(rt):
        return await admin.list_applications(rt, None, limit)

    rows = [{**a, "owner": a["owner"]["username"]} for a in _with_runtime(work)]
    _output(rows, ["id", "name", "owner", "trusted", "disabled"], as_json, "applications")


@apps_app.command("trust")
def apps_trust(application_id: str = APPLICATION_ARGUMENT,
               remove: bool = typer.Option(False, "--remove", help="take the trust away")) -> None:
    """Mark a first-party application trusted (it may then ask staff for the admin scope)."""
    from fluxer_oauth.platform import admin

    _with_runtime(lambda rt: admin.set_application_trusted(rt, None, _application_id(application_id), not remove))
    console.print(f"application {application_id} is {'not ' if remove else ''}trusted")


@apps_app.command("disable")
def apps_disable(application_id: str = APPLICATION_ARGUMENT,
                 enable: bool = typer.Option(False, "--enable", help="enable it again")) -> None:
    """Disable an application: its tokens stop working and its requests are refused."""
    from fluxer_oauth.platform import admin

    _with_runtime(lambda rt: admin.set_application_disabled(rt, None, _application_id(application_id), not enable))
    console.print(f"application {application_id} is {'enabled' if enable else 'disabled'}")


@apps_app.command("redirect-uris")
def apps_redirect_uris(
    application_id: str = APPLICATION_ARGUMENT,
    add: list[str] = typer.Option([], "--add", metavar="URI", help="register this URI too (may be repeated)"),
    remove: list[str] = typer.Option([], "--remove", metavar="URI", help="unregister this URI (may be repeated)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """An application's redirect URIs, after adding and removing the ones given (a URI
    already there is not added twice)."""
    from fluxer_oauth.platform import applications
    from fluxer_oauth.store import applications as app_store
    from fluxer_oauth.store import users as user_store

    async def work(rt):
        async with rt.db.read() as conn:
            found = await app_store.get_application(conn, _application_id(application_id))
            owner = await user_store.get_user(conn, found.owner_id) if found is not None else None
        if found is None:
            raise applications.UNKNOWN_APPLICATION
        uris = applications.redirect_uris_of(found)
        wanted = [uri for uri in uris if uri not in remove] + [uri for uri in dict.fromkeys(add) if uri not in uris]
        if wanted == uris:
            return uris
        return (await applications.update(rt, owner, found.id, {"redirect_uris": wanted}))["redirect_uris"]

    uris = _with_runtime(work)
    if as_json:
        print(json.dumps(uris, indent=2))
        return
    print("\n".join(uris) if uris else "(no redirect URIs)")


@guilds_app.command("create")
def guilds_create(owner: str = OWNER_ARGUMENT, name: str = typer.Argument(...), as_json: bool = JSON_OPTION) -> None:
    """Create a guild owned by a user."""
    from fluxer_oauth.platform import guilds

    async def work(rt):
        return await guilds.create_guild(rt, await _resolve_user(rt, owner), name)

    _output_one(_with_runtime(work), ["id", "name", "owner_id"], as_json, "created")


@grants_app.command("list")
def grants_list(user: str = USER_ARGUMENT, as_json: bool = JSON_OPTION) -> None:
    """A user's authorized applications."""
    from fluxer_oauth.platform.authorizations import list_authorizations

    async def work(rt):
        return await list_authorizations(rt, (await _resolve_user(rt, user)).id)

    rows = [{"application_id": g["application"]["id"], "application": g["application"]["name"],
             "scopes": " ".join(g["scopes"]), "first_authorized_at": g["first_authorized_at"],
             "last_used_at": g["last_used_at"]} for g in _with_runtime(work)]
    _output(rows, ["application_id", "application", "scopes", "first_authorized_at", "last_used_at"], as_json,
            "grants")


@grants_app.command("revoke")
def grants_revoke(user: str = USER_ARGUMENT, application_id: str = APPLICATION_ARGUMENT) -> None:
    """Revoke a user's grant for an application (all its tokens)."""
    from fluxer_oauth.platform.authorizations import revoke_authorization

    async def work(rt):
        await revoke_authorization(rt, (await _resolve_user(rt, user)).id, _application_id(application_id))

    _with_runtime(work)
    console.print("grant revoked")


KEY_COLUMNS = ["kid", "alg", "status", "created_at", "signs_from", "retires_at", "published_until"]


def _key_row(key, at: float) -> dict:
    """What an operator may see of a signing key: its id, algorithm, life and status; the
    key material stays in the database (the public half is in the JWKS)."""
    from fluxer_oauth.core.timefmt import iso
    from fluxer_oauth.oauth.keys import status

    return {"kid": key.kid, "alg": key.alg, "status": status(key, at), "created_at": iso(key.created_at),
            "signs_from": iso(key.signs_from), "retires_at": iso(key.retires_at),
            "published_until": iso(key.published_until)}


async def _all_keys(rt):
    from fluxer_oauth.store import keys as key_store

    async with rt.db.read() as conn:
        return await key_store.list_all(conn)


@keys_app.command("list")
def keys_list(as_json: bool = JSON_OPTION) -> None:
    """Every signing key, newest first: next (published, not signing yet), current, retiring
    (replaced; verifies until it leaves the JWKS), expired (deleted by the janitor)."""
    from fluxer_oauth.core.timefmt import now

    at = now()
    _output([_key_row(key, at) for key in _with_runtime(_all_keys)], KEY_COLUMNS, as_json, "signing keys")


@keys_app.command("rotate")
def keys_rotate(
    publish_delay: int | None = typer.Option(
        None, "--publish-delay", min=0, metavar="SECONDS",
        help="how long the new keys are published before they sign (default FLUXER_KEY_PUBLISH_DELAY)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """A new key per algorithm, published now; it signs after the publish delay (at once where
    no current key decrypts with this secret), and the keys it replaces leave the JWKS once
    the id_tokens they signed have expired."""
    from fluxer_oauth.core.timefmt import now
    from fluxer_oauth.oauth import keys

    async def work(rt):
        made = await keys.rotate(rt, publish_delay=publish_delay)
        return made, await _all_keys(rt)

    made, stored = _with_runtime(work)
    at = now()
    new = [_key_row(key, at) for key in made]
    # The keys this rotation retired: they stop signing when their successor starts.
    replaced = [_key_row(key, at) for key in stored if key.kid not in {m.kid for m in made}
                and any(key.alg == m.alg and key.retires_at == m.signs_from for m in made)]
    if as_json:
        print(json.dumps({"new": [_present(row) for row in new], "replaced": [_present(row) for row in replaced]},
                         indent=2))
        return
    for row in new:
        starts = "at once" if row["signs_from"] == row["created_at"] else f"from {row['signs_from']}"
        print(f"new {row['alg']} key {row['kid']}: in the JWKS now, signs {starts}")
    for row in replaced:
        print(f"old {row['alg']} key {row['kid']}: signs until {row['retires_at']}, "
              f"leaves the JWKS at {row['published_until']}")


@app.command()
def janitor(batch_size: int = typer.Option(2000, min=1, max=100000, metavar="ROWS",
                                           help="rows deleted per transaction")) -> None:
    """Delete expired codes, tokens and sessions, and images nobody uses, now, in batches."""
    from rich.progress import Progress

    from fluxer_oauth.ops.janitor import sweep, sweep_images

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("sweeping expired rows", total=None)

        def on_batch(table, count, _elapsed):
            progress.update(task, advance=count, description=f"sweeping {table}")

        report = _with_runtime(lambda rt: sweep(rt, batch_size=batch_size, on_batch=on_batch))
    for table, count in report.deleted.items():
        print(f"{table}: {count} deleted")
    print(f"batches: {len(report.batch_seconds)}, slowest {report.slowest_batch * 1000:.1f} ms")
    print(f"unused images: {_with_runtime(sweep_images)} deleted")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
