"""The bot consent page's choices, over the HTML form (SPEC §4.1 step 4, §5): the servers
offered (Manage Server or Administrator there, and the bot not in it yet), and the requested
permissions as boxes the user may untick. The bot gets exactly the ticked ones the request
asked for: never a forged one, none when every box is unticked; a server not offered is
refused when forged. The code flow (bot with other scopes, ``bot_require_code_grant``) stores
and installs the same ticked set."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from sqlalchemy import select

from fluxer_oauth.core import credentials
from fluxer_oauth.core.permissions import PERMISSIONS
from fluxer_oauth.store.tables import authorization_codes
from tests.api.test_authorize import browser_login, form_fields
from tests.api.test_bots import add_member, bot_headers, make_guild
from tests.conftest import create_app, query_of, register

P = PERMISSIONS
CB = "https://client.example/callback"
REQUESTED = P["ADMINISTRATOR"] | P["KICK_MEMBERS"] | P["SEND_MESSAGES"] | P["EMBED_LINKS"] | P["MANAGE_ROLES"]


async def _consent(client, app, **query):
    page = await client.get("/oauth2/authorize?" + urlencode({"client_id": app.id, "scope": "bot", **query}))
    assert page.status_code == 200, page.text
    return page


async def _submit(client, page, *, guild_id=None, permissions=(), action="authorize"):
    fields = form_fields(page.text)
    fields["request"] = fields["request"].replace("&amp;", "&")
    data = [*fields.items(), ("action", action)]
    if guild_id is not None:
        data.append(("guild_id", guild_id))
    data += [("permission", name) for name in permissions]
    return await client.post("/oauth2/authorize", content=urlencode(data),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})


async def _bot_role_permissions(client, app, guild_id) -> int | None:
    """The permissions of the bot's managed role in the guild; None when it has none."""
    roles = (await client.get(f"/api/v1/guilds/{guild_id}/roles", headers=bot_headers(app.body["bot"]["token"])))
    assert roles.status_code == 200, roles.text  # the bot is a member
    managed = [role for role in roles.json() if role["managed"]]
    assert len(managed) <= 1
    return int(managed[0]["permissions"]) if managed else None


def _offered(html: str) -> set[str]:
    return set(re.findall(r'type="radio" id="guild-\d+" name="guild_id" value="(\d+)"', html))


async def _owner_with_bot(client, name="Picky Bot", **fields):
    owner = await register(client, "consentowner")
    app = await create_app(client, owner, name=name, **fields)
    await browser_login(client, "consentowner")
    return owner, app


async def test_the_page_offers_each_requested_permission_as_a_ticked_box_with_its_label(client):
    owner, app = await _owner_with_bot(client)
    await make_guild(client, owner, "Home")
    page = await _consent(client, app, permissions=str(REQUESTED | P["SEND_TTS_MESSAGES"] | (1 << 19)))
    boxes = re.findall(r'<input type="checkbox" id="permission-(\w+)" name="permission" value="(\w+)" checked', page.text)
    assert [box for box, _value in boxes] == ["KICK_MEMBERS", "ADMINISTRATOR", "SEND_MESSAGES", "SEND_TTS_MESSAGES",
                                              "EMBED_LINKS", "MANAGE_ROLES"]  # bit 19 is undefined: not shown
    for label in ("Kick Members", "Administrator", "Send Messages", "Send TTS Messages", "Embed Links", "Manage Roles"):
        assert f"<span>{label}</span>" in page.text
    assert "Send Tts Messages" not in page.text


async def test_administrator_requested_shows_a_warning_tied_to_its_box(client):
    owner, app = await _owner_with_bot(client)
    await make_guild(client, owner, "Home")
    page = await _consent(client, app, permissions=str(REQUESTED))
    warning = re.search(r'<p class="warning" role="note" id="administrator-warning">([^<]+)</p>', page.text)
    assert warning and "every permission in the server" in warning.group(1) and "bots you trust" in warning.group(1)
    assert re.search(r'id="permission-ADMINISTRATOR"[^>]*aria-describedby="administrator-warning"', page.text)
    without = await _consent(client, app, permissions=str(P["SEND_MESSAGES"]))
    assert "administrator-warning" not in without.text


async def test_the_bot_gets_exactly_the_ticked_permissions(client):
    owner, app = await _owner_with_bot(client)
    guild_id = await make_guild(client, owner, "Home")
    page = await _consent(client, app, permissions=str(REQUESTED))
    done = await _submit(client, page, guild_id=guild_id, permissions=["KICK_MEMBERS", "SEND_MESSAGES", "EMBED_LINKS"])
    assert done.status_code == 303 and done.headers["location"].startswith("http://testserver/oauth2/authorized?")
    assert await _bot_role_permissions(client, app, guild_id) == P["KICK_MEMBERS"] | P["SEND_MESSAGES"] | P["EMBED_LINKS"]


async def test_unticking_every_box_gives_the_bot_no_permission(client):
    owner, app = await _owner_with_bot(client)
    guild_id = await make_guild(client, owner, "Home")
    page = await _consent(client, app, permissions=str(REQUESTED))
    done = await _submit(client, page, guild_id=guild_id, permissions=[])
    assert done.status_code == 303, done.text
    assert await _bot_role_permissions(client, app, guild_id) is None  # a member, with no role of its own
    roles = (await client.get(f"/api/v1/guilds/{guild_id}/roles", headers=owner.headers)).json()
    assert [role["name"] for role in roles] == ["@everyone"]


async def test_a_forged_permission_the_request_did_not_ask_for_is_not_given(client):
    owner, app = await _owner_with_bot(client)
    guild_id = await make_guild(client, owner, "Home")
    page = await _consent(client, app, permissions=str(P["SEND_MESSAGES"] | P["EMBED_LINKS"]))
    assert "permission-ADMINISTRATOR" not in page.text
    done = await _submit(client, page, guild_id=guild_id,
                         permissions=["SEND_MESSAGES", "ADMINISTRATOR", "BAN_MEMBERS", "8", "NOT_A_PERMISSION"])
    assert done.status_code == 303, done.text
    assert await _bot_role_permissions(client, app, guild_id) == P["SEND_MESSAGES"]


async def test_only_servers_the_user_may_add_the_bot_to_are_offered_and_others_are_refused(client):
    owner, app = await _owner_with_bot(client)
    other = await register(client, "otherowner")
    own = await make_guild(client, owner, "Own Server")
    occupied = await make_guild(client, owner, "Occupied Server")
    managed = await make_guild(client, other, "Managed Server")
    await add_member(client, other, managed, owner, P["MANAGE_GUILD"])
    administered = await make_guild(client, other, "Administered Server")
    await add_member(client, other, administered, owner, P["ADMINISTRATOR"])
    plain = await make_guild(client, other, "Plain Member Server")
    await add_member(client, other, plain, owner, P["KICK_MEMBERS"])
    first = await _submit(client, await _consent(client, app), guild_id=occupied)  # the bot is in it now
    assert first.status_code == 303, first.text

    page = await _consent(client, app, permissions=str(P["SEND_MESSAGES"]))
    assert _offered(page.text) == {own, managed, administered}
    assert "Occupied Server" not in page.text and "Plain Member Server" not in page.text
    for guild_id in (own, managed, administered):  # each with its icon (the letter circle without one)
        assert re.search(rf'id="guild-icon-{guild_id}"', page.text)

    refused = await _submit(client, page, guild_id=plain, permissions=["SEND_MESSAGES"])
    assert refused.status_code == 403 and "You do not have the permissions this needs in that server." in refused.text
    again = await _submit(client, page, guild_id=occupied, permissions=["SEND_MESSAGES"])
    assert again.status_code == 400 and "This bot is already in that server." in again.text
    bot_guilds = await client.get("/api/v1/users/@me/guilds", headers=bot_headers(app.body["bot"]["token"]))
    assert [g["id"] for g in bot_guilds.json()] == [occupied]
    # The refused page keeps the boxes as they were sent.
    assert re.search(r'value="SEND_MESSAGES" checked', again.text)


async def test_no_server_to_offer_says_so_and_disables_authorize(client):
    owner, app = await _owner_with_bot(client)
    page = await _consent(client, app, permissions=str(P["SEND_MESSAGES"]))
    assert 'id="no-guilds"' in page.text and "You need the Manage Server permission in a server to add this bot." in page.text
    assert re.search(r'value="authorize" class="primary" disabled aria-describedby="no-guilds">', page.text)
    assert not _offered(page.text)


async def test_a_locked_server_the_bot_is_already_in_is_not_offered(client):
    owner, app = await _owner_with_bot(client)
    guild_id = await make_guild(client, owner, "Home")
    assert (await _submit(client, await _consent(client, app), guild_id=guild_id)).status_code == 303
    page = await _consent(client, app, guild_id=guild_id, disable_guild_select="true")
    assert not _offered(page.text) and "You cannot add this bot to the server the application chose." in page.text
    assert re.search(r'value="authorize" class="primary" disabled', page.text)


async def test_the_code_flow_stores_and_installs_the_ticked_permissions(client, rt):
    owner, app = await _owner_with_bot(client, bot_require_code_grant=True)
    guild_id = await make_guild(client, owner, "Coded")
    page = await _consent(client, app, scope="bot identify", response_type="code", redirect_uri=CB,
                          permissions=str(REQUESTED))
    done = await _submit(client, page, guild_id=guild_id, permissions=["MANAGE_ROLES", "KICK_MEMBERS"])
    assert done.status_code == 303 and done.headers["location"].startswith(CB), done.text
    code = query_of(done.headers["location"])["code"]
    async with rt.db.read() as conn:
        row = (await conn.execute(select(authorization_codes).where(
            authorization_codes.c.code_hash == credentials.sha256(code)))).one()
    assert row.permissions == P["MANAGE_ROLES"] | P["KICK_MEMBERS"] and row.guild_id == int(guild_id)
    assert await _bot_role_permissions(client, app, guild_id) == P["MANAGE_ROLES"] | P["KICK_MEMBERS"]


async def test_the_json_consent_grants_every_requested_permission_by_default(client):
    """``POST /api/v1/oauth2/authorize/consent`` without granted_permissions: the request's."""
    owner, app = await _owner_with_bot(client)
    guild_id = await make_guild(client, owner, "Home")
    response = await client.post("/api/v1/oauth2/authorize/consent", headers=owner.headers, json={
        "client_id": app.id, "scope": "bot", "authorize": True, "permissions": str(REQUESTED), "guild_id": guild_id})
    assert response.status_code == 200, response.text
    assert await _bot_role_permissions(client, app, guild_id) == REQUESTED


async def test_the_json_consent_grants_only_the_users_subset_of_the_request(client):
    """A single-page client's granted_permissions are the page's boxes: the bot gets the
    requested bits among them, never one the request did not ask for."""
    owner, app = await _owner_with_bot(client)
    guild_id = await make_guild(client, owner, "Home")
    chosen = P["KICK_MEMBERS"] | P["SEND_MESSAGES"] | P["BAN_MEMBERS"]  # BAN_MEMBERS was not requested
    response = await client.post("/api/v1/oauth2/authorize/consent", headers=owner.headers, json={
        "client_id": app.id, "scope": "bot", "authorize": True, "permissions": str(REQUESTED), "guild_id": guild_id,
        "granted_permissions": str(chosen)})
    assert response.status_code == 200, response.text
    assert await _bot_role_permissions(client, app, guild_id) == P["KICK_MEMBERS"] | P["SEND_MESSAGES"]


async def test_the_json_consent_refuses_malformed_granted_permissions(client):
    owner, app = await _owner_with_bot(client)
    guild_id = await make_guild(client, owner, "Home")
    response = await client.post("/api/v1/oauth2/authorize/consent", headers=owner.headers, json={
        "client_id": app.id, "scope": "bot", "authorize": True, "permissions": str(REQUESTED), "guild_id": guild_id,
        "granted_permissions": "-1"})
    assert response.status_code == 400 and response.json()["errors"][0]["path"] == "granted_permissions"


def test_every_permission_has_a_label():
    from fluxer_oauth.web.permission_labels import permission_labels

    labels = permission_labels()
    assert set(labels) == set(PERMISSIONS)
    assert labels["MANAGE_GUILD"] == "Manage Server" and labels["USE_VAD"] == "Use Voice Activity"
    assert all(label and label[0].isupper() for label in labels.values())
