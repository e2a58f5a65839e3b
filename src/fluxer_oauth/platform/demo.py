"""Demo data for a local server: users, a guild with roles and members, connections,
and one application. Idempotent: running it again changes nothing that exists."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlencode

from fluxer_oauth.core import credentials
from fluxer_oauth.core.permissions import PERMISSIONS
from fluxer_oauth.core.timefmt import now
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import applications as app_store
from fluxer_oauth.store import guilds as guild_store
from fluxer_oauth.store import users as user_store

DEMO_PASSWORD = "fluxer-demo-password"
# Fixed IDs so that a second run finds what the first one made.
DEMO_USER_ID = 1_000_000_000_000_001
ALICE_ID = 1_000_000_000_000_002
BOB_ID = 1_000_000_000_000_003
DEMO_GUILD_ID = 1_000_000_000_000_010
MODERATOR_ROLE_ID = 1_000_000_000_000_011
DEMO_APP_ID = 1_000_000_000_000_100


@dataclass
class DemoInfo:
    login: str
    password: str
    client_id: str
    client_secret: str
    redirect_uri: str
    authorize_url: str


def demo_client_secret(rt: Runtime) -> str:
    """Derived from the server secret, so each run can print it without storing it."""
    return credentials.b64url(credentials.keyed_hash(rt.secret, "demo-client-secret", str(DEMO_APP_ID)))


async def load_demo(rt: Runtime) -> DemoInfo:
    at = now()
    redirect_uri = f"{rt.settings.public_url}/demo/callback"
    secret = demo_client_secret(rt)
    people = [
        (DEMO_USER_ID, "demo", "demo@fluxer.example", "Demo User"),
        (ALICE_ID, "alice", "alice@fluxer.example", "Alice"),
        (BOB_ID, "bob", "bob@fluxer.example", "Bob"),
    ]
    async with rt.db.read() as conn:
        missing = [p for p in people if await user_store.get_user(conn, p[0]) is None]
    hashes = {p[0]: await rt.passwords.hash(DEMO_PASSWORD) for p in missing}
    async with rt.db.write() as conn:
        for user_id, username, email, display in missing:
            await user_store.insert_user(
                conn, id=user_id, username=username, username_key=username, discriminator=f"{user_id % 9999 + 1:04d}",
                global_name=display, email=email, email_key=email, verified=True, password_hash=hashes[user_id],
                created_at=at,
            )
        if await guild_store.get_guild(conn, DEMO_GUILD_ID) is None:
            await guild_store.insert_guild(
                conn, id=DEMO_GUILD_ID, name="Fluxer Demo", owner_id=DEMO_USER_ID, features="[]", created_at=at
            )
            everyone = PERMISSIONS["VIEW_CHANNEL"] | PERMISSIONS["SEND_MESSAGES"] | PERMISSIONS["READ_MESSAGE_HISTORY"]
            moderators = PERMISSIONS["MANAGE_GUILD"] | PERMISSIONS["KICK_MEMBERS"] | PERMISSIONS["MANAGE_MESSAGES"]
            await guild_store.insert_role(
                conn, id=DEMO_GUILD_ID, guild_id=DEMO_GUILD_ID, name="@everyone", permissions=everyone, position=0,
                created_at=at,
            )
            await guild_store.insert_role(
                conn, id=MODERATOR_ROLE_ID, guild_id=DEMO_GUILD_ID, name="Moderators", permissions=moderators,
                position=1, created_at=at,
            )
            for user_id in (DEMO_USER_ID, ALICE_ID, BOB_ID):
                await guild_store.add_member(conn, DEMO_GUILD_ID, user_id, at)
            await guild_store.give_role(conn, DEMO_GUILD_ID, ALICE_ID, MODERATOR_ROLE_ID)
            for kind, external_id, name in (("github", "583231", "demo-octo"), ("bsky", "did:plc:demo", "demo.bsky.social")):
                await guild_store.insert_connection(
                    conn, user_id=DEMO_USER_ID, type=kind, id=external_id, name=name, verified=True, visibility=1,
                    created_at=at,
                )
        if await app_store.get_application(conn, DEMO_APP_ID) is None:
            await user_store.insert_user(
                conn, id=DEMO_APP_ID, username="Demo App", discriminator="0001", bot=True, verified=True, created_at=at
            )
            await app_store.insert_application(
                conn, id=DEMO_APP_ID, owner_id=DEMO_USER_ID, name="Demo App",
                description="The demo application of a local Fluxer OAuth2 server",
                secret_hash=credentials.client_secret_hash(rt.secret, secret),
                redirect_uris=json.dumps([redirect_uri, "http://localhost:8000/callback"]),
                bot_id=DEMO_APP_ID, bot_public=True, bot_require_code_grant=False,
                verify_key=credentials.keyed_hash(rt.secret, "demo-verify-key", "1").hex(),
                created_at=at, updated_at=at,
            )
        else:  # the secret key may have changed since the last run: keep the printed secret valid
            await app_store.update_application(
                conn, DEMO_APP_ID, secret_hash=credentials.client_secret_hash(rt.secret, secret)
            )
    query = urlencode(
        {"client_id": str(DEMO_APP_ID), "response_type": "code", "scope": "identify email guilds connections",
         "redirect_uri": redirect_uri, "state": "demo-state"}
    )
    return DemoInfo(
        login="demo", password=DEMO_PASSWORD, client_id=str(DEMO_APP_ID), client_secret=secret,
        redirect_uri=redirect_uri, authorize_url=f"{rt.settings.public_url}/oauth2/authorize?{query}",
    )
