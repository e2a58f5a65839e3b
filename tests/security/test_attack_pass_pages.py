"""Attack pass on the people-facing pages (sign-up, the flash cookie, the portal's sections
and confirmation pages, the bot consent's boxes and server picker, the HTML error pages, the
locale negotiation): each test names the behaviour it protects and fails while the weakness
is there. Most attacks below are already defended; the tests keep them that way."""

from __future__ import annotations

import gc
import logging
import tracemalloc
from html import unescape
from urllib.parse import quote, urlencode, urlsplit

import httpx
import pytest
from starlette.routing import Route

from fluxer_oauth.app import build_app
from fluxer_oauth.core.permissions import PERMISSIONS
from fluxer_oauth.oauth.metadata import metadata
from fluxer_oauth.ops.logging import JsonFormatter
from fluxer_oauth.web import flash, i18n, templating
from tests.api.test_authorize import browser_login, form_fields
from tests.api.test_bots import add_member, bot_headers, make_guild
from tests.conftest import PASSWORD, create_app, csrf_of, register, shown, tokens_for

P = PERMISSIONS
LIST = "/developers/applications"
EVIL = "https://evil.example"


def client_for(app, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 40000)), base_url="http://testserver")


async def signup(client: httpx.AsyncClient, username: str, next_url: str = "/", **fields) -> httpx.Response:
    page = await client.get("/signup")
    data = {"csrf_token": csrf_of(page.text), "next": next_url, "username": username,
            "email": f"{username}@example.com", "password": PASSWORD, "password_confirm": PASSWORD, **fields}
    return await client.post("/signup", data=data)


async def create_in_portal(client: httpx.AsyncClient, name: str = "Flashy") -> httpx.Response:
    listing = await client.get(LIST)
    created = await client.post(LIST, data={"csrf_token": csrf_of(listing.text), "name": name, "bot": "1",
                                            "redirect_uris": "https://f.example/cb"})
    assert created.status_code == 303, created.text
    return created


def sealed_cookie(response: httpx.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header.split(";", 1)[0].split("=", 1)[1]
    raise AssertionError(f"no {name} cookie set")


async def still_exists(client, owner, app_id: str) -> bool:
    response = await client.get(f"/api/v1/oauth2/applications/{app_id}", headers=owner.headers)
    return response.status_code == 200


# --- cross-site form posts and login CSRF ----------------------------------------------------------

def _page_posts(app) -> list[str]:
    return sorted({route.path for route in app.routes if isinstance(route, Route) and "POST" in route.methods
                   and not route.path.startswith(("/api/", "/v1/"))})


@pytest.mark.parametrize("cross_site", [{"Origin": EVIL}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                                        {"Sec-Fetch-Site": "same-site"}])
async def test_every_page_form_refuses_a_post_another_site_sent(client, app, cross_site):
    """A form on another site (or a sibling subdomain) POSTs to each page route with the victim's cookies and a valid token."""
    owner = await register(client, "crosssite")
    target = await create_app(client, owner, bot=True)
    await tokens_for(client, owner, target)  # an authorization to revoke
    await browser_login(client, "crosssite")
    token = csrf_of((await client.get(LIST)).text)
    for path in _page_posts(app):
        url = path.replace("{application_id}", target.id)
        response = await client.post(url, data={"csrf_token": token, "password": PASSWORD, "name": "Owned",
                                                "username": "planted", "email": "planted@example.com",
                                                "password_confirm": PASSWORD, "action": "authorize"},
                                     headers=cross_site)
        assert response.status_code == 403, (path, response.status_code)
        assert "another site" in response.text, path
    assert await still_exists(client, owner, target.id)
    assert (await client.post("/api/v1/auth/login", json={"login": "planted", "password": PASSWORD})).status_code == 400


async def test_signup_cannot_sign_a_victims_browser_into_an_attackers_account(client, app):
    """Login CSRF via sign-up: the attacker fetches /signup for a token and has the victim's browser post it."""
    async with client_for(app) as attacker:
        attacker_token = csrf_of((await attacker.get("/signup")).text)
    await client.get("/signup")  # the victim's browser has its own CSRF cookie
    forged = await client.post("/signup", data={
        "csrf_token": attacker_token, "next": "/", "username": "attackers", "email": "attackers@example.com",
        "password": PASSWORD, "password_confirm": PASSWORD})
    assert forged.status_code == 403 and "fluxer_session" not in client.cookies
    assert (await client.post("/api/v1/auth/login", json={"login": "attackers", "password": PASSWORD})).status_code == 400


@pytest.mark.parametrize("unsafe", [
    "//evil.example", "///evil.example", "/\\evil.example", "\\\\evil.example", "/\t/evil.example", "/\n/evil.example",
    "https:evil.example", "http://evil.example", " //evil.example", "/%2F/evil.example", "javascript:alert(1)",
    "/\u3000/evil.example", "/\uff0f/evil.example",
])
async def test_signup_next_never_leads_off_the_site(client, unsafe):
    """Open redirect via the sign-up form's next (and the GET for a signed-in visitor)."""
    name = "n" + str(abs(hash(unsafe)) % 10**8)
    response = await signup(client, name, next_url=unsafe)
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    for where in (location, (await client.get("/signup?next=" + quote(unsafe, safe=""))).headers["location"]):
        parts = urlsplit(where)
        assert not parts.scheme and not parts.netloc and where.startswith("/") and not where.startswith(("//", "/\\"))


async def test_signup_enumeration_costs_the_registration_allowance(settings):
    """Probing which usernames exist through /signup is throttled like the API's registration."""
    app = build_app(settings.model_copy(update={"rate_limits": "on", "rate_limit_registrations": "2/hour"}))
    try:
        async with client_for(app, "192.0.2.7") as http:
            await http.post("/api/v1/auth/register", json={"username": "taken", "email": "taken@example.com",
                                                           "password": PASSWORD})
            answers = [(await signup(http, "taken", email=f"probe{i}@example.com")).status_code for i in range(3)]
        assert answers == [400, 429, 429]
    finally:
        await app.state.runtime.db.close()


async def test_signup_throttle_counts_an_ipv6_network_not_each_of_its_addresses(settings):
    """Registration throttle bypass: an IPv6 client holds a /64 (2^64 addresses) and signs up once from each."""
    app = build_app(settings.model_copy(update={"rate_limits": "on", "rate_limit_registrations": "2/hour"}))
    try:
        answers = []
        for host in range(1, 5):
            async with client_for(app, f"2001:db8:1:2::{host:x}") as http:
                answers.append((await signup(http, f"v6user{host}")).status_code)
        assert answers[:2] == [303, 303]
        assert answers[2:] == [429, 429], answers
    finally:
        await app.state.runtime.db.close()


# --- the flash cookie ---------------------------------------------------------------------------------

async def test_a_flash_cookie_is_not_readable_after_logout_and_a_new_login(client):
    """Replay on a shared computer: the next person to sign in (same account or not) gets the secret the flash carried."""
    await register(client, "flashlogout")
    await browser_login(client, "flashlogout")
    created = await create_in_portal(client)
    sealed = sealed_cookie(created, flash.COOKIE)
    app_path = created.headers["location"]
    logout_page = await client.get("/logout")
    await client.post("/logout", data={"csrf_token": csrf_of(logout_page.text)})
    await browser_login(client, "flashlogout")
    page = await client.get(app_path, headers={"Cookie": f"fluxer_session={client.cookies['fluxer_session']}; "
                                                         f"{flash.COOKIE}={sealed}"})
    assert page.status_code == 200 and 'id="client-secret"' not in page.text and 'id="bot-token"' not in page.text


async def test_a_flash_is_read_only_by_the_page_of_its_own_scope(client, owner_with_grant):
    """The list's flash, the authorized-apps flash and an application's flash, each replayed under another's name."""
    owner, granted = owner_with_grant
    created = await create_in_portal(client, "Scoped")
    app_sealed = sealed_cookie(created, flash.COOKIE)
    app_path = created.headers["location"]
    # A second application, deleted: the list's flash.
    doomed = (await create_in_portal(client, "Doomed")).headers["location"]
    confirm = await client.get(doomed + "/delete")
    deleted = await client.post(doomed + "/delete", data={"csrf_token": csrf_of(confirm.text), "password": PASSWORD})
    list_sealed = sealed_cookie(deleted, flash.cookie_name(flash.LIST_SCOPE))
    # The authorized-apps flash.
    page = await client.get(f"/settings/authorized-apps/{granted.id}/revoke")
    revoked = await client.post(f"/settings/authorized-apps/{granted.id}/revoke",
                                data={"csrf_token": csrf_of(page.text)})
    revoked_sealed = sealed_cookie(revoked, flash.COOKIE)
    session = client.cookies["fluxer_session"]

    def jar(name: str, value: str) -> dict:
        return {"Cookie": f"fluxer_session={session}; {name}={value}"}

    for name, value in ((flash.COOKIE, list_sealed), (flash.COOKIE, revoked_sealed),
                        (flash.cookie_name(flash.LIST_SCOPE), list_sealed)):
        other = await client.get(app_path, headers=jar(name, value))
        assert other.status_code == 200 and "deleted." not in other.text and "revoked." not in other.text
        assert 'id="client-secret"' not in other.text
    for name, value in ((flash.COOKIE, app_sealed), (flash.cookie_name(flash.LIST_SCOPE), app_sealed),
                        (flash.cookie_name(flash.LIST_SCOPE), revoked_sealed)):
        listing = await client.get(LIST, headers=jar(name, value))
        assert "deleted." not in listing.text and 'id="client-secret"' not in listing.text
    for value in (app_sealed, list_sealed):
        apps = await client.get("/settings/authorized-apps", headers=jar(flash.COOKIE, value))
        assert "revoked." not in apps.text and 'id="client-secret"' not in apps.text


@pytest.fixture
async def owner_with_grant(client):
    """A signed-in user who owns nothing yet and authorized another person's application."""
    other = await register(client, "grantowner")
    granted = await create_app(client, other, name="Granted")
    owner = await register(client, "flashscopes")
    await tokens_for(client, owner, granted)
    await browser_login(client, "flashscopes")
    return owner, granted


async def test_a_page_showing_a_new_secret_is_never_stored_framed_or_leaked_by_referer(client):
    """Secrets left in a shared cache, in the back-forward cache, in a Location header or sent to other sites as Referer."""
    await register(client, "nostore")
    await browser_login(client, "nostore")
    created = await create_in_portal(client)
    page = await client.get(created.headers["location"])
    secret, token = shown(page.text, "client-secret"), shown(page.text, "bot-token")
    assert secret and token
    for response in (created, page):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["x-frame-options"] == "DENY"
        assert secret not in response.headers.get("location", "") and token not in response.headers.get("location", "")
    assert "<iframe" not in page.text


async def test_new_secrets_and_passwords_never_reach_a_log_line(client, app, caplog):
    """Credentials in the access log or an error log (query strings, form fields, flash payloads)."""
    logging.getLogger("fluxer").setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    try:
        owner = await signup(client, "logged")
        assert owner.status_code == 303
        created = await create_in_portal(client)
        page = await client.get(created.headers["location"])
        secret, token = shown(page.text, "client-secret"), shown(page.text, "bot-token")
        confirm = await client.get(created.headers["location"] + "/reset-secret")
        reset = await client.post(created.headers["location"] + "/reset-secret",
                                  data={"csrf_token": csrf_of(confirm.text), "password": PASSWORD})
        new_secret = shown((await client.get(reset.headers["location"])).text, "client-secret")
    finally:
        logging.getLogger("fluxer").setLevel(app.state.runtime.settings.log_level.upper())
    assert secret and token and new_secret
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert lines  # the access log ran
    for line in lines:
        for value in (secret, token, new_secret, PASSWORD, client.cookies["fluxer_session"]):
            assert value not in line


# --- confirmation pages -------------------------------------------------------------------------------

async def test_confirmation_pages_change_nothing_on_get_or_head(client):
    """A link, an <img> or a prefetch of a confirmation page (even with the password in the query) does the action."""
    owner = await register(client, "getsafe")
    target = await create_app(client, owner, bot=True)
    await browser_login(client, "getsafe")
    own_tokens = await tokens_for(client, owner, target)
    for action in ("delete", "reset-secret", "reset-token"):
        for method in ("GET", "HEAD"):
            response = await client.request(method, f"{LIST}/{target.id}/{action}?password={quote(PASSWORD)}"
                                                    f"&action=delete&confirm=1")
            assert response.status_code == 200, (action, method)
            assert flash.COOKIE not in response.headers.get("set-cookie", "")
    revoke = await client.get(f"/settings/authorized-apps/{target.id}/revoke?confirm=1")
    assert revoke.status_code == 200
    assert await still_exists(client, owner, target.id)
    assert (await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                              auth=target.basic)).status_code == 200
    bot = await client.get("/api/v1/users/@me", headers=bot_headers(target.body["bot"]["token"]))
    assert bot.status_code == 200
    assert (await client.get("/api/v1/users/@me", headers={"Authorization": f"Bearer {own_tokens['access_token']}"}
                             )).status_code == 200


@pytest.mark.parametrize("action", ["delete", "reset-secret", "reset-token"])
@pytest.mark.parametrize("password", [None, "", " ", "wrong password", PASSWORD + "\x00", PASSWORD.upper(),
                                      "x" * 200])
async def test_a_confirmation_post_needs_the_owners_password(client, action, password):
    """Deletion or a credential reset by a valid form without the password (missing, blank, near miss, overlong)."""
    owner = await register(client, "pwconfirm")
    target = await create_app(client, owner, bot=True)
    await browser_login(client, "pwconfirm")
    page = await client.get(f"{LIST}/{target.id}/{action}")
    data = {"csrf_token": csrf_of(page.text)}
    if password is not None:
        data["password"] = password
    refused = await client.post(f"{LIST}/{target.id}/{action}", data=data)
    assert refused.status_code in (400, 403), refused.status_code
    assert "fluxer_flash" not in refused.headers.get("set-cookie", "")
    assert await still_exists(client, owner, target.id)
    assert (await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                              auth=target.basic)).status_code == 200
    assert (await client.get("/api/v1/users/@me", headers=bot_headers(target.body["bot"]["token"]))).status_code == 200


async def test_the_confirmation_pages_check_the_password_exactly_as_typed(client):
    """The pages strip the password (Params.get): an owner whose password has edge spaces can never confirm, and a stripped guess passes."""
    owner = (await client.post("/api/v1/auth/register", json={
        "username": "spaced", "email": "spaced@example.com", "password": "  spaced password  "})).json()
    headers = {"Authorization": owner["token"]}
    target = (await client.post("/api/v1/oauth2/applications", headers=headers,
                                json={"name": "Spaced", "redirect_uris": ["https://s.example/cb"]})).json()
    login = await client.get("/login")
    signed_in = await client.post("/login", data={"csrf_token": csrf_of(login.text), "login": "spaced",
                                                  "password": "  spaced password  ", "next": "/"})
    assert signed_in.status_code == 303, "the page refuses the password the API accepted"
    page = await client.get(f"{LIST}/{target['id']}/reset-secret")
    reset = await client.post(f"{LIST}/{target['id']}/reset-secret",
                              data={"csrf_token": csrf_of(page.text), "password": "  spaced password  "})
    assert reset.status_code == 303


# --- the bot consent: boxes and the server picker ---------------------------------------------------------

async def _bot_consent(client, app, **query) -> httpx.Response:
    page = await client.get("/oauth2/authorize?" + urlencode({"client_id": app.id, "scope": "bot", **query}))
    assert page.status_code == 200, page.text
    return page


async def _submit_consent(client, page, extra: list[tuple[str, str]]) -> httpx.Response:
    fields = form_fields(page.text)
    fields["request"] = unescape(fields["request"])
    data = [*fields.items(), ("action", "authorize"), *extra]
    return await client.post("/oauth2/authorize", content=urlencode(data),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})


async def _managed_role(client, app, guild_id) -> int | None:
    roles = await client.get(f"/api/v1/guilds/{guild_id}/roles", headers=bot_headers(app.body["bot"]["token"]))
    if roles.status_code != 200:
        return None
    managed = [int(role["permissions"]) for role in roles.json() if role["managed"]]
    return managed[0] if managed else 0


@pytest.mark.parametrize("boxes", [
    ["KICK_MEMBERS", "ADMINISTRATOR", "ADMINISTRATOR"],
    ["KICK_MEMBERS", "8", str(P["ADMINISTRATOR"]), str(2**64 - 1), "-1", "1e30"],
    ["KICK_MEMBERS", "administrator", "Administrator", " ADMINISTRATOR\u200b", "ADMINISTRATOR\x00"],
    ["KICK_MEMBERS"] * 70 + ["ADMINISTRATOR"],
    ["KICK_MEMBERS", "MANAGE_GUILD", "MANAGE_ROLES", "BAN_MEMBERS"],
])
async def test_the_bot_never_gets_a_permission_the_request_did_not_ask_for(client, boxes):
    """Form tampering on the consent page: repeated boxes, bit values, case tricks, unknown names, huge values."""
    owner = await register(client, "boxes")
    app = await create_app(client, owner, name="Boxed Bot")
    guild_id = await make_guild(client, owner, "Boxes")
    await browser_login(client, "boxes")
    page = await _bot_consent(client, app, permissions=str(P["KICK_MEMBERS"] | P["SEND_MESSAGES"]))
    done = await _submit_consent(client, page, [("guild_id", guild_id), *[("permission", box) for box in boxes]])
    assert done.status_code == 303, done.text
    assert await _managed_role(client, app, guild_id) == P["KICK_MEMBERS"]


@pytest.mark.parametrize("granted", [str(2**64 - 1), 2**64 - 1, str(P["ADMINISTRATOR"]), "18446744073709551616",
                                     "-8", "8.0", "0x8", " 8"])
async def test_the_json_consent_grants_nothing_beyond_the_request(client, granted):
    """granted_permissions on the JSON consent as every bit, a too-large value, a negative one, other spellings."""
    owner = await register(client, "jsonboxes")
    app = await create_app(client, owner, name="Json Bot")
    guild_id = await make_guild(client, owner, "Json")
    response = await client.post("/api/v1/oauth2/authorize/consent", headers=owner.headers, json={
        "client_id": app.id, "scope": "bot", "authorize": True, "permissions": str(P["KICK_MEMBERS"]),
        "guild_id": guild_id, "granted_permissions": granted})
    assert response.status_code in (200, 400), response.text
    role = await _managed_role(client, app, guild_id)
    assert role in (None, 0, P["KICK_MEMBERS"])  # not installed, installed bare, or with what was asked


async def test_a_locked_server_cannot_be_swapped_for_another_in_the_form(client):
    """disable_guild_select names guild A; the form is edited to post guild B (which the user also manages)."""
    owner = await register(client, "locked")
    app = await create_app(client, owner, name="Locked Bot")
    chosen = await make_guild(client, owner, "Chosen")
    other = await make_guild(client, owner, "Other")
    await browser_login(client, "locked")
    page = await _bot_consent(client, app, guild_id=chosen, disable_guild_select="true",
                              permissions=str(P["SEND_MESSAGES"]))
    assert f'value="{other}"' not in page.text
    fields = form_fields(page.text)
    fields["request"] = unescape(fields["request"])
    data = [*fields.items(), ("action", "authorize"), ("guild_id", other), ("permission", "SEND_MESSAGES")]
    done = await client.post("/oauth2/authorize", content=urlencode(data),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status_code in (303, 400, 403), done.text
    bot_guilds = await client.get("/api/v1/users/@me/guilds", headers=bot_headers(app.body["bot"]["token"]))
    assert other not in [g["id"] for g in bot_guilds.json()]


async def test_a_server_the_user_cannot_manage_is_refused_even_when_posted_with_administrator(client):
    """A member without Manage Server posts that server's id, ticking Administrator the request asked for."""
    owner = await register(client, "notmanager")
    app = await create_app(client, owner, name="Eager Bot")
    stranger = await register(client, "serverowner")
    guild_id = await make_guild(client, stranger, "Not Yours")
    await add_member(client, stranger, guild_id, owner, P["SEND_MESSAGES"])
    await browser_login(client, "notmanager")
    page = await _bot_consent(client, app, permissions=str(P["ADMINISTRATOR"]))
    assert f'value="{guild_id}"' not in page.text
    done = await _submit_consent(client, page, [("guild_id", guild_id), ("permission", "ADMINISTRATOR")])
    assert done.status_code == 403
    members = await client.get(f"/api/v1/guilds/{guild_id}/members", headers=stranger.headers)
    assert app.body["bot"]["id"] not in [m["user"]["id"] for m in members.json()]


async def test_the_bot_added_page_claims_only_an_install_that_happened(client):
    """Content spoofing: a crafted /oauth2/authorized link says an attacker-named bot was added to the victim's server."""
    attacker = await register(client, "spoofer")
    spoof = await create_app(client, attacker, name="Fluxer Safety Team: verify at evil.example")
    victim = await register(client, "spoofed")
    guild_id = await make_guild(client, victim, "Victim Server")
    await browser_login(client, "spoofed")
    page = await client.get(f"/oauth2/authorized?client_id={spoof.id}&guild_id={guild_id}")
    assert page.status_code in (200, 404)
    assert "evil.example" not in page.text and "Victim Server" not in page.text


# --- error pages: reflection, headers, and the paths that must stay JSON --------------------------------------

@pytest.mark.parametrize("path", [
    "/%3Cscript%3Ealert(1)%3C/script%3E", "/settings/%22%3E%3Cimg%20src=x%20onerror=alert(1)%3E",
    "/developers/applications/%3Csvg%20onload=alert(1)%3E/delete", "/oauth2/authorized/%3Cb%3Ex",
])
async def test_error_pages_do_not_reflect_the_path_or_query(client, path):
    """XSS or content injection through a 404/405 page's text."""
    for method in ("GET", "PUT"):
        response = await client.request(method, path + "?q=%3Cscript%3Ealert(2)%3C/script%3E")
        if response.status_code == 302:  # a portal path, signed out: to the login page, on this site
            assert response.headers["location"].startswith("/login?next=%2F")
            continue
        assert response.status_code in (404, 405) and response.headers["content-type"].startswith("text/html")
        for needle in ("<script>alert", "<img src=x", "<svg onload", "alert(1)", "alert(2)", "<b>x"):
            assert needle not in response.text


async def test_the_authorization_error_page_escapes_what_the_request_carried(client):
    """An attacker-crafted authorize link whose parameters end on the error page (no redirect URI to trust)."""
    owner = await register(client, "reflected")
    app = await create_app(client, owner)
    await browser_login(client, "reflected")
    payload = "<script>alert(1)</script>"
    for query in ({"client_id": payload}, {"client_id": app.id, "redirect_uri": "https://evil.example/" + payload},
                  {"client_id": app.id, "redirect_uri": payload},
                  {"client_id": app.id, "scope": "bot", "permissions": payload, "state": payload}):
        response = await client.get("/oauth2/authorize?" + urlencode(query))
        assert "<script>alert" not in response.text, query
        assert all("\n" not in value and "\r" not in value for value in response.headers.values())


MACHINE_ERRORS = [
    ("POST", "/.well-known/openid-configuration"), ("POST", "/.well-known/oauth-authorization-server"),
    ("GET", "/.well-known/jwks.json"), ("GET", "/.well-known/openid-configuration/"),
    ("POST", "/healthz"), ("POST", "/readyz"), ("POST", "/metrics"),
    ("GET", "/api/v1/oauth2/token"), ("GET", "/v1/oauth2/token"), ("GET", "/api/oauth2/token"),
    ("POST", "/api/oauth2/token"), ("GET", "/v1/oauth2/device/authorize"), ("GET", "/api/v1/oauth2/introspect"),
    ("PUT", "/api/v1/oauth2/userinfo"), ("POST", "/api/v1/oauth2/keys"), ("GET", "/api/v1/oauth2/token/revoke"),
    ("GET", "/api"), ("GET", "/v1"), ("GET", "/api/v1"),
]


@pytest.mark.parametrize("method,path", MACHINE_ERRORS)
async def test_machine_endpoints_answer_errors_in_json_never_an_html_page(client, method, path):
    """The edge turning an OAuth client's or a probe's error into an HTML page it cannot parse."""
    response = await client.request(method, path, headers={"Accept-Language": "fr", "Accept": "text/html"})
    assert response.status_code >= 400
    assert response.headers["content-type"].startswith("application/json"), (path, response.headers["content-type"])
    assert response.json()["code"]
    assert "content-language" not in response.headers


async def test_a_machine_endpoint_over_the_body_limit_answers_413_in_json(client, settings):
    """A 413 on the token endpoint (or discovery) as an HTML page."""
    big = b"x" * (settings.max_body_bytes + 1)
    for path in ("/api/v1/oauth2/token", "/v1/oauth2/token", "/.well-known/openid-configuration"):
        response = await client.post(path, content=big, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 413, path
        assert response.headers["content-type"].startswith("application/json"), path


def test_every_endpoint_discovery_advertises_but_authorization_is_a_machine_path(settings):
    """A client-facing endpoint outside /api/v1 whose errors the edge would turn into pages."""
    document = metadata(settings)
    for field, url in document.items():
        if not field.endswith(("_endpoint", "_uri")) or field == "authorization_endpoint":
            continue
        path = urlsplit(url).path
        assert not templating.is_page_path(path), (field, path)
    assert templating.is_page_path(urlsplit(document["authorization_endpoint"]).path)  # a browser page
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server", "/healthz",
                 "/readyz", "/metrics"):
        assert not templating.is_page_path(path)


@pytest.mark.parametrize("path", ["/login", "/signup", "/no-such-page", "/static/style.css",
                                  "/static/url-generator.js", "/api/v1/no-such", "/.well-known/openid-configuration",
                                  "/healthz", "/metrics", "/favicon.ico", "/static/nothing.js"])
async def test_every_answer_forbids_content_sniffing(client, path):
    """A browser sniffing an error body or a static file into HTML or script."""
    response = await client.get(path)
    assert response.headers["x-content-type-options"] == "nosniff", path


async def test_retry_after_on_a_page_429_is_only_digits(settings):
    """Header injection through Retry-After on the HTML 429 pages (sign-up and the global limit)."""
    app = build_app(settings.model_copy(update={"rate_limits": "on", "rate_limit_registrations": "1/hour",
                                                "rate_limit_global": "3/minute"}))
    try:
        async with client_for(app, "192.0.2.9") as http:
            statuses = []
            for i in range(4):
                response = await http.get("/signup?next=%0d%0aX-Injected:%201")
                statuses.append(response.status_code)
                if response.status_code == 429:
                    assert response.headers["retry-after"].isdigit()
                    assert "x-injected" not in response.headers
                    assert response.headers["content-type"].startswith("text/html")
            assert 429 in statuses
    finally:
        await app.state.runtime.db.close()


# --- the locale ---------------------------------------------------------------------------------------------

async def test_a_french_request_leaves_no_locale_to_the_next_request(client):
    """A locale leaking through the context variable to the next page or API answer of the same task/connection."""
    french = await client.get("/login", headers={"Accept-Language": "fr"})
    assert french.headers["content-language"] == "fr" and '<html lang="fr">' in french.text
    api = await client.get("/api/v1/no-such-thing")
    assert api.headers["content-type"].startswith("application/json") and "content-language" not in api.headers
    assert (await client.get("/api/v1/users/@me")).json()["message"].isascii()
    for path in ("/login", "/no-such-page", "/signup"):
        page = await client.get(path)
        assert page.headers["content-language"] == "en", path
        assert '<html lang="en">' in page.text, path
    error = await client.request("DELETE", "/login")
    assert error.headers["content-language"] == "en" and "Page not found" in error.text


@pytest.mark.parametrize("header", [
    "fr;q=nan, en;q=0.1", "fr;q=inf", "fr;q=1e999", "fr;q=-1, en", ";;;,,,;q=", "fr" + ",x" * 5000,
    "x" * 100_000, "fr-" + "A" * 200_000, "\u00e9\u00e9", "*", "fr;q=0",
])
async def test_a_hostile_accept_language_is_answered(client, header):
    """A huge or malformed Accept-Language header (a 500, or a page in a locale nobody asked for)."""
    response = await client.get("/login", headers={"Accept-Language": header.encode("utf-8")})
    assert response.status_code == 200
    assert response.headers["content-language"] in i18n.LOCALES


def test_the_locale_cache_does_not_keep_huge_accept_language_headers():
    """Memory pinning: 256 distinct 64 KiB Accept-Language headers (granian reads up to ~400 KiB of headers) stay cached forever."""
    i18n._negotiate.cache_clear()
    gc.collect()
    tracemalloc.start()
    try:
        for index in range(256):
            header = f"fr;q=0.{index % 10}," + "x" * 65_536 + str(index)
            i18n.negotiate(header)
            del header
        gc.collect()
        retained, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        i18n._negotiate.cache_clear()
    assert retained < 2 * 1024 * 1024, f"{retained / 1e6:.1f} MB kept by the locale cache"
