"""A model of every credential's life, checked against the server over random sequences of
everything that issues or ends access (a Hypothesis state machine).

The machine authorizes, consents, redeems and replays codes, refreshes, retries and reuses
refresh tokens (with and without the reuse leeway), issues client-credentials tokens, revokes (by the user, by staff, by the client),
disables and re-enables users, owners and applications, resets secrets and bot tokens,
trusts and untrusts, grants and removes staff, adds bots to a guild and makes them leave,
and deletes applications. After every step it checks every credential it has ever seen
against its model of what must still work: access and client tokens and bot tokens and
sessions through the API, refresh tokens, codes, guild members and managed roles in the
database.

CI runs a bounded number of sequences on each backend (SQLite; PostgreSQL + Redis). A long
run: FLUXER_LIFECYCLE_EXAMPLES=500 FLUXER_LIFECYCLE_STEPS=60 pytest tests/security/test_lifecycle_machine.py
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import HealthCheck, event, settings as hypothesis_settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test
from sqlalchemy import select

from fluxer_oauth.app import build_app
from fluxer_oauth.core import credentials
from fluxer_oauth.platform import admin
from fluxer_oauth.core.permissions import PERMISSIONS
from fluxer_oauth.store.tables import authorization_codes, guild_members, roles, tokens
from tests.conftest import PASSWORD, query_of

EXAMPLES = int(os.environ.get("FLUXER_LIFECYCLE_EXAMPLES", "8"))
STEPS = int(os.environ.get("FLUXER_LIFECYCLE_STEPS", "30"))
CALLBACK = "https://client.example/callback"
SCOPES = ("identify", "identify email", "identify admin")


@dataclass
class Person:
    name: str
    id: str
    session: str | None
    staff: bool = False
    enabled: bool = True


@dataclass
class App:
    name: str
    id: str
    owner: str  # the owner's name
    secret: str
    bot_token: str
    old_bot_tokens: list[str] = field(default_factory=list)
    enabled: bool = True
    trusted: bool = False
    deleted: bool = False
    in_guild: bool = False  # its bot, with the managed role it was given
    secret_known: bool = True  # False once made public and back: no one knows its secret until a reset


@dataclass
class Credential:
    kind: str  # code, access, refresh, client
    value: str
    app: str
    user: str | None  # a person's name; None for client tokens
    scopes: frozenset
    family: int  # the code a user's tokens descend from
    issue: int  # the access/refresh pair
    alive: bool = True
    used: bool = False  # a code redeemed, or a refresh token rotated
    rotated_at: int = 0  # the machine's counter when a refresh token was rotated
    user_code: str = ""  # a device code's, to type at /activate


@dataclass
class World:
    people: dict[str, Person] = field(default_factory=dict)
    apps: dict[str, App] = field(default_factory=dict)
    credentials: list[Credential] = field(default_factory=list)
    old_sessions: list[str] = field(default_factory=list)
    consent: dict[tuple[str, str], set] = field(default_factory=dict)
    guild_id: str = ""


def lifecycle_machine(server_settings):
    """The state machine class over a fresh app for each sequence, on ``server_settings``'s
    database (each sequence registers accounts of its own)."""

    class Lifecycle(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.app = build_app(server_settings)
            self.rt = self.app.state.runtime
            self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://testserver")
            self.world = World()
            self.counter = 0

        def teardown(self) -> None:
            self.run(self.http.aclose())
            self.run(self.rt.db.close())
            self.loop.close()

        def run(self, coroutine):
            return self.loop.run_until_complete(coroutine)

        def next_number(self) -> int:
            self.counter += 1
            return self.counter

        # --- the world -------------------------------------------------------------------

        @initialize()
        def setup(self) -> None:
            self.run(self._setup())

        async def _setup(self) -> None:
            tag = secrets.token_hex(3)
            for name in ("owner_a", "owner_b", "staff", "plain"):
                username = f"{name}_{tag}"
                response = await self.http.post("/api/v1/auth/register", json={
                    "username": username, "email": f"{username}@example.com", "password": PASSWORD})
                assert response.status_code == 201, response.text
                body = response.json()
                self.world.people[name] = Person(username, body["user"]["id"], body["token"])
            await admin.set_staff(self.rt, None, int(self.world.people["staff"].id), True)
            self.world.people["staff"].staff = True
            for name, owner in (("a", "owner_a"), ("b", "owner_b")):
                response = await self.http.post("/api/v1/oauth2/applications", headers=self.session_of(owner),
                                                json={"name": f"App {name}", "redirect_uris": [CALLBACK]})
                assert response.status_code == 201, response.text
                body = response.json()
                self.world.apps[name] = App(name, body["id"], owner, body["client_secret"], body["bot"]["token"])
            guild = await self.http.post("/api/v1/guilds", json={"name": "Guild"}, headers=self.session_of("owner_a"))
            assert guild.status_code == 201, guild.text
            self.world.guild_id = guild.json()["id"]
            await self._first_pair()

        async def _first_pair(self) -> None:
            """A pair to refresh from the first step (refreshing and its retries need one,
            and reaching one through the random rules takes most of a sequence)."""
            consent = await self.http.post("/api/v1/oauth2/authorize/consent", headers=self.session_of("plain"), json={
                "client_id": self.world.apps["a"].id, "scope": "identify", "authorize": True,
                "response_type": "code", "redirect_uri": CALLBACK})
            code = Credential("code", query_of(consent.json()["redirect_to"])["code"], "a", "plain",
                              frozenset({"identify"}), family=self.next_number(), issue=0, alive=False, used=True)
            app = self.world.apps["a"]
            pair = await self.http.post("/api/v1/oauth2/token", auth=(app.id, app.secret), data={
                "grant_type": "authorization_code", "code": code.value, "redirect_uri": CALLBACK})
            assert pair.status_code == 200, pair.text
            self.world.consent[("plain", "a")] = {"identify"}
            self.world.credentials.append(code)
            self.add_pair(pair.json(), code)

        def session_of(self, name: str) -> dict:
            return {"Authorization": self.world.people[name].session}

        def usable(self, app: App) -> bool:
            """Whether the application authenticates at all: enabled, not deleted, owner enabled."""
            return app.enabled and not app.deleted and self.world.people[app.owner].enabled

        def authenticates(self, app: App) -> bool:
            """Whether the application's client authentication with the secret the machine holds works."""
            return self.usable(app) and app.secret_known

        def end(self, predicate) -> None:
            for credential in self.world.credentials:
                if predicate(credential):
                    credential.alive = False

        def end_grant(self, user: str, app: str) -> None:
            self.end(lambda c: c.user == user and c.app == app)
            self.world.consent.pop((user, app), None)

        def end_application(self, app: str) -> None:
            self.end(lambda c: c.app == app)
            for key in [key for key in self.world.consent if key[1] == app]:
                del self.world.consent[key]

        def end_admin_grants(self, chosen) -> None:
            """End every grant carrying admin (remembered, or on a live token) that ``chosen(user, app)`` picks."""
            holders = {key for key, scopes in self.world.consent.items() if "admin" in scopes}
            holders |= {(c.user, c.app) for c in self.world.credentials
                        if c.alive and "admin" in c.scopes and c.kind != "code"}
            for user, app in holders:
                if chosen(user, app):
                    self.end_grant(user, app)

        # --- issuing -----------------------------------------------------------------------

        @rule(user=st.sampled_from(["staff", "plain", "owner_a"]), app=st.sampled_from("ab"),
              scope=st.sampled_from(SCOPES))
        def authorize(self, user, app, scope) -> None:
            person, target = self.world.people[user], self.world.apps[app]
            if not person.enabled:
                return
            response = self.run(self.http.post("/api/v1/oauth2/authorize/consent", headers=self.session_of(user),
                                               json={"client_id": target.id, "scope": scope, "authorize": True,
                                                     "response_type": "code", "redirect_uri": CALLBACK}))
            if not self.usable(target):
                if response.status_code == 200:  # a disabled application: an error to the client
                    assert "code" not in query_of(response.json()["redirect_to"])
                else:
                    assert response.status_code in (400, 404), response.text
                return
            assert response.status_code == 200, response.text
            params = query_of(response.json()["redirect_to"])
            allowed = "admin" not in scope or (target.trusted and person.staff)
            assert ("code" in params) == allowed, (scope, params)
            if allowed:
                scopes = frozenset(scope.split())
                self.world.consent.setdefault((user, app), set()).update(scopes)
                self.world.credentials.append(Credential("code", params["code"], app, user, scopes,
                                                         family=self.next_number(), issue=0))

        def token_request(self, app: App, data: dict) -> httpx.Response:
            return self.run(self.http.post("/api/v1/oauth2/token", data=data, auth=(app.id, app.secret)))

        @precondition(lambda self: any(c.kind == "code" for c in self.world.credentials))
        @rule(data=st.data())
        def redeem(self, data) -> None:
            code = data.draw(st.sampled_from([c for c in self.world.credentials if c.kind == "code"]))
            app = self.world.apps[code.app]
            response = self.token_request(app, {"grant_type": "authorization_code", "code": code.value,
                                                "redirect_uri": CALLBACK})
            if not self.authenticates(app):
                assert response.status_code in (400, 401), response.text
                return
            if code.alive and not code.used:
                assert response.status_code == 200, response.text
                code.used = True
                code.alive = False
                self.add_pair(response.json(), code)
            else:
                assert response.status_code == 400 and response.json()["error"] == "invalid_grant", response.text
                if code.used:  # a replay: everything issued from the code ends
                    self.end(lambda c: c.family == code.family and c.kind in ("access", "refresh"))

        def add_pair(self, body: dict, parent: Credential, issue: int | None = None) -> None:
            issue = issue if issue is not None else self.next_number()
            scopes = frozenset(body["scope"].split())
            for kind in ("access", "refresh"):
                self.world.credentials.append(Credential(kind, body[f"{kind}_token"], parent.app, parent.user,
                                                         scopes, parent.family, issue))

        @precondition(lambda self: any(c.kind == "refresh" for c in self.world.credentials))
        @rule(data=st.data())
        def refresh(self, data) -> None:
            self.present_refresh(data.draw(st.sampled_from([c for c in self.world.credentials
                                                              if c.kind == "refresh"])))

        @precondition(lambda self: any(c.kind == "refresh" and c.used for c in self.world.credentials))
        @rule(data=st.data())
        def refresh_again(self, data) -> None:
            """A client whose refresh answer was lost presents the rotated token again."""
            self.present_refresh(data.draw(st.sampled_from([c for c in self.world.credentials
                                                              if c.kind == "refresh" and c.used])))

        def present_refresh(self, token: Credential) -> None:
            app = self.world.apps[token.app]
            response = self.token_request(app, {"grant_type": "refresh_token", "refresh_token": token.value})
            if not self.authenticates(app):
                assert response.status_code in (400, 401), response.text
                return
            if token.alive:
                assert response.status_code == 200, response.text
                token.used = True
                token.rotated_at = self.next_number()
                # The rest of its issue ends with it: the pairs of retries within the leeway too,
                # their refresh tokens counted as rotated (presented again, reuse or a retry).
                for sibling in self.world.credentials:
                    if sibling.issue == token.issue and sibling.kind == "refresh" and sibling.alive:
                        if sibling is not token:
                            event("a retry's sibling pair ended by a refresh")
                        sibling.used, sibling.rotated_at = True, token.rotated_at
                self.end(lambda c: c.issue == token.issue)
                self.add_pair(response.json(), token)
            elif token.used and (joined := self.retried_within_leeway(token)) is not None:
                # A retry of a refresh whose answer was lost: a new pair, joining the issue of
                # the pairs issued since the rotation, and nothing ends.
                event("refresh retried within the leeway")
                assert response.status_code == 200, response.text
                self.add_pair(response.json(), token, issue=joined)
            else:
                assert response.status_code == 400 and response.json()["error"] == "invalid_grant", response.text
                if token.used:  # reuse of a rotated token ends the grant
                    self.end_grant(token.user, token.app)

        def retried_within_leeway(self, token: Credential) -> int | None:
            """The leeway's rule (oauth/token.py): the sequence runs well within it when it is
            on, so a rotated token is a retry while the refresh tokens issued in its family
            since its rotation are unrefreshed and one of them lives (the grant lives). The
            issue the retry's pair joins (that live one's), or None."""
            if server_settings.refresh_reuse_leeway <= 0:
                return None
            since = [c for c in self.world.credentials if c.kind == "refresh" and c.family == token.family
                     and c.app == token.app and c.issue > token.rotated_at]
            if any(c.used for c in since):
                return None
            return next((c.issue for c in since if c.alive), None)

        @rule(app=st.sampled_from("ab"))
        def client_credentials(self, app) -> None:
            target = self.world.apps[app]
            response = self.token_request(target, {"grant_type": "client_credentials"})
            if not self.authenticates(target):
                assert response.status_code in (400, 401), response.text
                return
            assert response.status_code == 200, response.text
            self.world.credentials.append(Credential("client", response.json()["access_token"], app, None,
                                                     frozenset({"identify"}), 0, self.next_number()))

        # --- the device flow ---------------------------------------------------------------------

        @rule(app=st.sampled_from("ab"), scope=st.sampled_from(("identify", "identify email")))
        def device_start(self, app, scope) -> None:
            target = self.world.apps[app]
            response = self.run(self.http.post("/api/v1/oauth2/device/authorize", data={"scope": scope},
                                               auth=(target.id, target.secret)))
            if not self.authenticates(target):
                assert response.status_code in (400, 401), response.text
                return
            assert response.status_code == 200, response.text
            body = response.json()
            self.world.credentials.append(Credential("device", body["device_code"], app, None,
                                                     frozenset(scope.split()), family=self.next_number(), issue=0,
                                                     user_code=body["user_code"]))

        @precondition(lambda self: any(c.kind == "device" for c in self.world.credentials))
        @rule(data=st.data(), user=st.sampled_from(["staff", "plain", "owner_a"]))
        def device_approve(self, data, user) -> None:
            """The user types the code at /activate, signed in through the page's cookie."""
            device = data.draw(st.sampled_from([c for c in self.world.credentials if c.kind == "device"]))
            person, target = self.world.people[user], self.world.apps[device.app]
            if not person.enabled:
                return
            approved = self.run(self._activate(person.session, device.user_code))
            pending = device.alive and device.user is None and self.usable(target)
            assert approved == pending, (device, approved)
            if approved:
                device.user = user
                self.world.consent.setdefault((user, device.app), set()).update(device.scopes)

        async def _activate(self, session: str, user_code: str) -> bool:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://testserver",
                                         cookies={"fluxer_session": session}) as browser:
                page = await browser.get(f"/activate?user_code={user_code}")
                csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
                answer = await browser.post("/activate", data={"csrf_token": csrf, "user_code": user_code,
                                                               "action": "authorize"})
            assert answer.status_code in (200, 400), answer.text
            return answer.status_code == 200

        @precondition(lambda self: any(c.kind == "device" for c in self.world.credentials))
        @rule(data=st.data())
        def device_poll(self, data) -> None:
            device = data.draw(st.sampled_from([c for c in self.world.credentials if c.kind == "device"]))
            app = self.world.apps[device.app]
            response = self.token_request(app, {"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                                                "device_code": device.value})
            if not self.authenticates(app):
                assert response.status_code in (400, 401), response.text
                return
            error = response.json().get("error")
            if device.used:  # presented again after its tokens: a replay ends what it issued
                assert error == "invalid_grant", response.text
                self.end(lambda c: c.family == device.family and c.kind in ("access", "refresh"))
            elif not device.alive:
                assert error == "access_denied", response.text
            elif device.user is None:
                assert error in ("authorization_pending", "slow_down"), response.text
            else:
                assert response.status_code == 200, response.text
                device.used = True
                self.add_pair(response.json(), device)

        # --- ending --------------------------------------------------------------------------

        @precondition(lambda self: any(c.kind in ("access", "refresh") for c in self.world.credentials))
        @rule(data=st.data())
        def client_revokes(self, data) -> None:
            token = data.draw(st.sampled_from([c for c in self.world.credentials if c.kind in ("access", "refresh")]))
            app = self.world.apps[token.app]
            response = self.run(self.http.post("/api/v1/oauth2/revoke", data={"token": token.value},
                                               auth=(app.id, app.secret)))
            if not self.authenticates(app):
                assert response.status_code in (400, 401), response.text
                return
            assert response.status_code == 200, response.text
            if not app.deleted:
                self.end_grant(token.user, token.app)

        @rule(user=st.sampled_from(["staff", "plain", "owner_a"]), app=st.sampled_from("ab"))
        def user_revokes(self, user, app) -> None:
            if not self.world.people[user].enabled:
                return
            target = self.world.apps[app]
            had = (user, app) in self.world.consent or any(
                c.alive and c.user == user and c.app == app for c in self.world.credentials)
            response = self.run(self.http.delete(f"/api/v1/oauth2/@me/authorizations/{target.id}",
                                                 headers=self.session_of(user)))
            assert response.status_code == (204 if had else 404), response.text
            self.end_grant(user, app)

        @rule(user=st.sampled_from(["staff", "plain", "owner_a"]), app=st.sampled_from("ab"))
        def staff_revokes(self, user, app) -> None:
            try:
                self.run(admin.revoke_grant(self.rt, int(self.world.people["staff"].id),
                                            int(self.world.people[user].id), int(self.world.apps[app].id)))
            except Exception as exc:  # 404: nothing to end
                assert getattr(exc, "status", None) == 404, exc
            self.end_grant(user, app)

        @rule(app=st.sampled_from("ab"), disabled=st.booleans())
        def disable_application(self, app, disabled) -> None:
            target = self.world.apps[app]
            if target.deleted:
                return
            self.run(admin.set_application_disabled(self.rt, None, int(target.id), disabled))
            target.enabled = not disabled
            if disabled:
                self.end_application(app)

        @rule(user=st.sampled_from(["owner_a", "plain", "staff"]), disabled=st.booleans())
        def disable_user(self, user, disabled) -> None:
            person = self.world.people[user]
            self.run(admin.set_user_disabled(self.rt, None, int(person.id), disabled))
            if disabled:
                person.enabled = False
                if person.session:
                    self.world.old_sessions.append(person.session)
                person.session = None
                self.end(lambda c: c.user == user)
                for key in [key for key in self.world.consent if key[0] == user]:
                    del self.world.consent[key]
                for app in self.world.apps.values():
                    if app.owner == user:
                        self.end_application(app.name)
            elif not person.enabled:
                person.enabled = True
                response = self.run(self.http.post("/api/v1/auth/login",
                                                   json={"login": person.name, "password": PASSWORD}))
                assert response.status_code == 200, response.text
                person.session = response.json()["token"]

        @rule(app=st.sampled_from("ab"), which=st.sampled_from(["client-secret/reset", "bot/reset-token"]))
        def reset(self, app, which) -> None:
            target = self.world.apps[app]
            owner = self.world.people[target.owner]
            if target.deleted or not owner.enabled:
                return
            response = self.run(self.http.post(f"/api/v1/oauth2/applications/{target.id}/{which}",
                                               json={"password": PASSWORD}, headers=self.session_of(target.owner)))
            assert response.status_code == 200, response.text
            if which == "client-secret/reset":
                target.secret = response.json()["client_secret"]
                target.secret_known = True
            else:
                target.old_bot_tokens.append(target.bot_token)
                target.bot_token = response.json()["token"]
            self.end(lambda c: c.app == app and c.kind == "client")

        @rule(app=st.sampled_from("ab"))
        def public_and_back(self, app) -> None:
            """The owner makes the client public, then confidential again: the secret it had
            stops working at once, and so do the tokens it issued with it and its device codes."""
            target = self.world.apps[app]
            owner = self.world.people[target.owner]
            if target.deleted or not owner.enabled:
                return
            for public in (True, False):
                response = self.run(self.http.patch(f"/api/v1/oauth2/applications/{target.id}",
                                                    json={"public_client": public},
                                                    headers=self.session_of(target.owner)))
                assert response.status_code == 200 and response.json()["public_client"] is public, response.text
            target.secret_known = False
            # what the secret protected: client-credentials tokens and device codes not yet redeemed
            self.end(lambda c: c.app == app and c.kind in ("client", "device"))

        @rule(app=st.sampled_from("ab"), trusted=st.booleans())
        def trust(self, app, trusted) -> None:
            target = self.world.apps[app]
            if target.deleted:
                return
            self.run(admin.set_application_trusted(self.rt, None, int(target.id), trusted))
            target.trusted = trusted
            if not trusted:
                self.end_admin_grants(lambda user, grant_app: grant_app == app)

        @rule(staff=st.booleans())
        def set_staff(self, staff) -> None:
            person = self.world.people["staff"]
            self.run(admin.set_staff(self.rt, None, int(person.id), staff))
            person.staff = staff
            if not staff:
                self.end_admin_grants(lambda user, grant_app: user == "staff")

        @rule(app=st.sampled_from("ab"))
        def install_bot(self, app) -> None:
            target = self.world.apps[app]
            if not self.world.people["owner_a"].enabled:
                return
            response = self.run(self.http.post("/api/v1/oauth2/authorize/consent", headers=self.session_of("owner_a"),
                                               json={"client_id": target.id, "scope": "bot", "authorize": True,
                                                     "permissions": str(PERMISSIONS["ADMINISTRATOR"]),
                                                     "guild_id": self.world.guild_id, "response_type": None}))
            if not self.usable(target):
                assert response.status_code in (200, 400, 404), response.text
                assert not (response.status_code == 200 and "code=" in (response.json()["redirect_to"] or ""))
                return
            if target.in_guild:
                assert response.status_code == 400 and response.json()["code"] == "BOT_ALREADY_IN_GUILD", response.text
            else:
                assert response.status_code == 200, response.text
                target.in_guild = True

        @rule(app=st.sampled_from("ab"))
        def bot_leaves(self, app) -> None:
            target = self.world.apps[app]
            response = self.run(self.http.delete(f"/api/v1/users/@me/guilds/{self.world.guild_id}",
                                                 headers={"Authorization": f"Bot {target.bot_token}"}))
            if not self.usable(target):
                assert response.status_code == 401, response.text
            elif target.in_guild:
                assert response.status_code == 204, response.text
                target.in_guild = False
            else:
                assert response.status_code == 404, response.text

        @precondition(lambda self: not self.world.apps["b"].deleted)
        @rule()
        def delete_application(self) -> None:
            target = self.world.apps["b"]
            owner = self.world.people[target.owner]
            response = self.run(self.http.delete(f"/api/v1/oauth2/applications/{target.id}",
                                                 headers=self.session_of(target.owner)))
            assert response.status_code == 204, response.text
            assert owner.enabled
            target.deleted = True
            target.in_guild = False
            self.end_application("b")

        # --- what must still work, and what must not ----------------------------------------

        @invariant()
        def every_credential_is_as_the_model_says(self) -> None:
            if not self.world.people:
                return
            self.run(self._check())

        async def _check(self) -> None:
            for credential in self.world.credentials:
                if credential.kind in ("access", "client"):
                    me = await self.http.get("/api/v1/users/@me",
                                             headers={"Authorization": f"Bearer {credential.value}"})
                    assert me.status_code == (200 if credential.alive else 401), (credential, me.text)
            stored = await self._stored()
            for credential in self.world.credentials:
                if credential.kind == "refresh":
                    revoked_at = stored["tokens"].get(credentials.stored_token_key(credential.value), "gone")
                    assert (revoked_at is None) == credential.alive, (credential, revoked_at)
                elif credential.kind == "code":
                    row = stored["codes"].get(credentials.sha256(credential.value), "gone")
                    assert (row is None) == (credential.alive and not credential.used), (credential, row)
            for app in self.world.apps.values():
                for token in (app.bot_token, *app.old_bot_tokens):
                    me = await self.http.get("/api/v1/users/@me", headers={"Authorization": f"Bot {token}"})
                    expected = 200 if token == app.bot_token and self.usable(app) else 401
                    assert me.status_code == expected, (app, me.text)
            async with self.rt.db.read() as conn:
                managed = (await conn.execute(select(roles.c.id).where(
                    roles.c.guild_id == int(self.world.guild_id), roles.c.managed.is_(True)))).all()
                members = set((await conn.execute(select(guild_members.c.user_id).where(
                    guild_members.c.guild_id == int(self.world.guild_id)))).scalars())
            in_guild = {int(app.id) for app in self.world.apps.values() if app.in_guild}
            assert len(managed) == len(in_guild), (managed, in_guild)
            assert members == in_guild | {int(self.world.people["owner_a"].id)}, (members, in_guild)
            for person in self.world.people.values():
                if person.session:
                    assert (await self.http.get("/api/v1/users/@me", headers={
                        "Authorization": person.session})).status_code == 200
            for session in self.world.old_sessions:
                assert (await self.http.get("/api/v1/users/@me", headers={"Authorization": session})).status_code == 401

        async def _stored(self) -> dict:
            """Refresh tokens' revocation times and codes' consumption times, by stored key."""
            async with self.rt.db.read() as conn:
                token_rows = (await conn.execute(select(tokens.c.token_hash, tokens.c.revoked_at))).all()
                code_rows = (await conn.execute(
                    select(authorization_codes.c.code_hash, authorization_codes.c.consumed_at))).all()
            return {"tokens": {bytes(key): revoked for key, revoked in token_rows},
                    "codes": {bytes(key): consumed for key, consumed in code_rows}}

    return Lifecycle


# Without the refresh reuse leeway, and with one far longer than a sequence takes (the leeway's
# end is tested on its own, tests/api/test_refresh_leeway.py). Retries are one rule among many:
# the leeway's run takes more sequences, so that some of them retry.
@pytest.mark.parametrize(("leeway", "examples"), [(0, EXAMPLES), (3600, EXAMPLES * 3)],
                         ids=["no-leeway", "within-leeway"])
def test_every_credential_lives_exactly_as_long_as_the_model_says(settings, leeway, examples):
    machine = lifecycle_machine(settings.model_copy(update={"refresh_reuse_leeway": leeway}))
    run_state_machine_as_test(machine, settings=hypothesis_settings(
        max_examples=examples, stateful_step_count=STEPS, deadline=None, database=None,
        suppress_health_check=list(HealthCheck)))
