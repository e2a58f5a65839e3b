"""Applications and their bots (SPEC §5): owner-only management, credentials shown once."""

from __future__ import annotations

import json
import secrets

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.redirect_uris import RedirectUriError, validate_for_registration
from fluxer_oauth.core.timefmt import now
from fluxer_oauth.grants import endings
from fluxer_oauth.core.signing import DEFAULT_ALGORITHM, SIGNING_ALGORITHMS
from fluxer_oauth.platform import images
from fluxer_oauth.platform.accounts import new_discriminator, public_user_json, user_json
from fluxer_oauth.platform.passwords import UNTHROTTLED, PasswordThrottle, check_password
from fluxer_oauth.platform.validation import FormErrors, check_link, check_text
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import applications as app_store
from fluxer_oauth.store import audit
from fluxer_oauth.store import users as user_store

UNKNOWN_APPLICATION = ApiError(404, "UNKNOWN_APPLICATION", "unknown application")
# The application's public links (shown on the consent page): absolute https URLs, or None.
LINK_FIELDS = ("terms_of_service_url", "privacy_policy_url")


def redirect_uris_of(app) -> list[str]:
    return json.loads(app.redirect_uris)


def check_redirect_uris(errors: FormErrors, uris, max_count: int) -> list[str] | None:
    if uris is None:
        return None
    if len(uris) > max_count:
        errors.add("redirect_uris", "TOO_MANY_REDIRECT_URIS", f"at most {max_count} redirect URIs")
        return None
    cleaned: list[str] = []
    for index, uri in enumerate(uris):
        try:
            validate_for_registration(uri)
        except RedirectUriError as exc:
            errors.add(f"redirect_uris.{index}", "REDIRECT_URI_INVALID", f"redirect URI {exc}")
            continue
        if uri not in cleaned:
            cleaned.append(uri)
    return cleaned


def _check_fields(rt: Runtime, errors: FormErrors, name, description, redirect_uris):
    check_text(errors, "name", name.strip() if name is not None else None, min_len=1, max_len=100)
    check_text(errors, "description", description, min_len=0, max_len=400)
    return check_redirect_uris(errors, redirect_uris, rt.settings.max_redirect_uris)


def _check_alg(errors: FormErrors, alg) -> None:
    if alg not in SIGNING_ALGORITHMS:
        errors.add("id_token_signed_response_alg", "INVALID_ALGORITHM",
                   f"must be one of {', '.join(SIGNING_ALGORITHMS)}")


def _bot_username(name: str) -> str:
    cleaned = "".join(ch for ch in name if ch.isalnum() or ch in "_. ").strip()[:32]
    return cleaned if len(cleaned) >= 2 else "bot"


async def create(
    rt: Runtime,
    owner,
    *,
    name: str,
    description: str = "",
    redirect_uris: list[str] | None = None,
    bot_public: bool = True,
    bot_require_code_grant: bool = False,
    bot: bool = True,
    public_client: bool = False,
    id_token_signed_response_alg: str = DEFAULT_ALGORITHM,
    terms_of_service_url: str | None = None,
    privacy_policy_url: str | None = None,
) -> dict:
    errors = FormErrors()
    uris = _check_fields(rt, errors, name, description, redirect_uris or []) or []
    _check_alg(errors, id_token_signed_response_alg)
    links = {"terms_of_service_url": check_link(errors, "terms_of_service_url", terms_of_service_url),
             "privacy_policy_url": check_link(errors, "privacy_policy_url", privacy_policy_url)}
    errors.raise_if_any()
    async with rt.db.read() as conn:
        if await app_store.count_owned(conn, owner.id) >= rt.settings.max_applications_per_user:
            raise ApiError(
                400, "MAX_APPLICATIONS", f"at most {rt.settings.max_applications_per_user} applications per user"
            )
    application_id = rt.ids.next()
    client_secret = credentials.new_client_secret()
    at = now()
    bot_token = credentials.new_bot_token(rt.secret, application_id, int(at)) if bot else None
    async with rt.db.write() as conn:
        if bot:
            await user_store.insert_user(
                conn,
                id=application_id,
                username=_bot_username(name),
                discriminator=new_discriminator(),
                bot=True,
                verified=True,
                created_at=at,
            )
        await app_store.insert_application(
            conn,
            id=application_id,
            owner_id=owner.id,
            name=name.strip(),
            description=description,
            secret_hash=credentials.client_secret_hash(rt.secret, client_secret),
            redirect_uris=json.dumps(uris),
            bot_id=application_id if bot else None,
            bot_token_hash=credentials.sha256(bot_token) if bot_token else None,
            bot_public=bot_public,
            bot_require_code_grant=bot_require_code_grant,
            public_client=public_client,
            id_token_signed_response_alg=id_token_signed_response_alg,
            verify_key=secrets.token_hex(32),
            **links,
            created_at=at,
            updated_at=at,
        )
        await audit.record(
            conn, id=rt.ids.next(), now=at, action="application.created", actor_id=owner.id,
            application_id=application_id, details={"name": name.strip(), "bot": bot},
        )
        app = await app_store.get_application(conn, application_id)
        bot_user = await user_store.get_user(conn, application_id) if bot else None
    body = application_json(app, owner=owner, bot_user=bot_user, private=True)
    if not public_client:  # a public client has no secret to keep (its stored hash is of a discarded one)
        body["client_secret"] = client_secret
    if bot_token:
        body["bot"]["token"] = bot_token
    return body


async def owned(rt: Runtime, owner, application_id: int):
    async with rt.db.read() as conn:
        app = await app_store.get_application(conn, application_id)
        if app is None or app.owner_id != owner.id:
            raise UNKNOWN_APPLICATION
        bot_user = await user_store.get_user(conn, app.bot_id) if app.bot_id else None
    return app, bot_user


async def list_owned(rt: Runtime, owner) -> list[dict]:
    async with rt.db.read() as conn:
        apps = await app_store.list_owned(conn, owner.id)
        bots = await user_store.get_users(conn, [app.bot_id for app in apps if app.bot_id])
    return [application_json(app, owner=owner, bot_user=bots.get(app.bot_id), private=True) for app in apps]


async def update(rt: Runtime, owner, application_id: int, changes: dict) -> dict:
    app, _ = await owned(rt, owner, application_id)
    errors = FormErrors()
    uris = _check_fields(
        rt, errors, changes.get("name"), changes.get("description"), changes.get("redirect_uris")
    )
    if changes.get("id_token_signed_response_alg") is not None:
        _check_alg(errors, changes["id_token_signed_response_alg"])
    # A link absent from the changes stays; present as None or "" it is removed.
    links = {field: check_link(errors, field, changes[field]) for field in LINK_FIELDS if field in changes}
    errors.raise_if_any()
    values: dict = {}
    if changes.get("name") is not None:
        values["name"] = changes["name"].strip()
    if changes.get("description") is not None:
        values["description"] = changes["description"]
    if uris is not None:
        values["redirect_uris"] = json.dumps(uris)
    values.update((field, url) for field, url in links.items() if url != getattr(app, field))
    for flag in ("bot_public", "bot_require_code_grant", "id_token_signed_response_alg"):
        if changes.get(flag) is not None:
            values[flag] = changes[flag]
    switched = changes.get("public_client") is not None and bool(changes["public_client"]) != bool(app.public_client)
    if switched:
        # Either way the secret it had stops working: a public client has none, and a client
        # made confidential again gets a new one from the secret reset (no one knows this one).
        values["public_client"] = bool(changes["public_client"])
        values["secret_hash"] = credentials.client_secret_hash(rt.secret, credentials.new_client_secret())
    image = None
    if "icon" in changes:  # a data URI, or None to remove the icon (docs/api.md "Images")
        image = await images.process(rt, "icon", changes["icon"]) if changes["icon"] is not None else None
        values["icon"] = image.hash if image is not None else None
    at = now()
    async with images.storing(rt, image) as record_image, rt.db.write() as conn:
        if values:
            if switched:  # first: an ending takes its lock before it writes any row
                await endings.end_client_type_change(rt, conn, app.id, actor_id=owner.id, at=at)
            await record_image(conn)
            await app_store.update_application(conn, app.id, updated_at=at, **values)
            values.pop("secret_hash", None)
            logged = {key: value for key, value in values.items() if key != "redirect_uris"}
            if uris is not None:
                logged["redirect_uris"] = uris
            await audit.record(
                conn, id=rt.ids.next(), now=at, action="application.updated", actor_id=owner.id,
                application_id=app.id, details=logged,
            )
    app, bot_user = await owned(rt, owner, application_id)
    return application_json(app, owner=owner, bot_user=bot_user, private=True)


async def delete(rt: Runtime, owner, application_id: int) -> None:
    app, _ = await owned(rt, owner, application_id)
    at = now()
    async with rt.db.write() as conn:
        await endings.end_application(rt, conn, app.id, by="application_deleted", actor_id=owner.id, at=at,
                                      bot_id=app.bot_id)
        await app_store.delete_application(conn, app.id)
        await audit.record(
            conn, id=rt.ids.next(), now=at, action="application.deleted", actor_id=owner.id,
            application_id=app.id, details={"name": app.name},
        )


async def reset_client_secret(rt: Runtime, owner, application_id: int, password,
                              throttle: PasswordThrottle = UNTHROTTLED) -> dict:
    app, _ = await owned(rt, owner, application_id)
    if app.public_client:
        raise ApiError(400, "PUBLIC_CLIENT", "a public client has no secret: make it confidential first")
    await check_password(rt, owner, password, throttle)
    client_secret = credentials.new_client_secret()
    at = now()
    async with rt.db.write() as conn:
        await app_store.update_application(
            conn, app.id, secret_hash=credentials.client_secret_hash(rt.secret, client_secret), updated_at=at
        )
        await endings.end_client_credentials(rt, conn, app.id, by="client_secret_reset", actor_id=owner.id, at=at)
        await audit.record(
            conn, id=rt.ids.next(), now=at, action="application.secret_reset", actor_id=owner.id,
            application_id=app.id,
        )
    return {"client_secret": client_secret}


async def reset_bot_token(rt: Runtime, owner, application_id: int, password,
                          throttle: PasswordThrottle = UNTHROTTLED) -> dict:
    app, _ = await owned(rt, owner, application_id)
    if app.bot_id is None:
        raise ApiError(400, "APPLICATION_HAS_NO_BOT", "this application has no bot")
    await check_password(rt, owner, password, throttle)
    at = now()
    token = credentials.new_bot_token(rt.secret, app.bot_id, int(at))
    async with rt.db.write() as conn:
        await app_store.update_application(conn, app.id, bot_token_hash=credentials.sha256(token), updated_at=at)
        await endings.end_client_credentials(rt, conn, app.id, by="bot_token_reset", actor_id=owner.id, at=at)
        await audit.record(
            conn, id=rt.ids.next(), now=at, action="application.bot_token_reset", actor_id=owner.id,
            application_id=app.id,
        )
    return {"token": token}


async def public_view(rt: Runtime, application_id: int) -> dict:
    async with rt.db.read() as conn:
        app = await app_store.get_application(conn, application_id)
        bot_user = await user_store.get_user(conn, app.bot_id) if app is not None and app.bot_id else None
    if app is None or app.disabled_at is not None:
        raise UNKNOWN_APPLICATION
    return application_json(app, owner=None, bot_user=bot_user, private=False)


def application_json(app, *, owner, bot_user, private: bool) -> dict:
    """Discord's application object; ``private`` adds what only the owner sees."""
    body = {
        "id": str(app.id),
        "name": app.name,
        "icon": app.icon,
        "description": app.description,
        "bot_public": bool(app.bot_public),
        "bot_require_code_grant": bool(app.bot_require_code_grant),
        "verify_key": app.verify_key,
        "flags": 0,
        "terms_of_service_url": app.terms_of_service_url,
        "privacy_policy_url": app.privacy_policy_url,
    }
    if bot_user is not None:
        body["bot"] = user_json(bot_user, with_email=False)
    if private:
        body["owner"] = user_json(owner, with_email=False)
        body["redirect_uris"] = redirect_uris_of(app)
        body["trusted"] = bool(app.trusted)
        body["disabled"] = app.disabled_at is not None
        body["public_client"] = bool(app.public_client)
        body["id_token_signed_response_alg"] = app.id_token_signed_response_alg
    return body


async def bot_view(rt: Runtime, bot_id: int) -> dict:
    """What a bot sees of its own application: the public view plus its owner."""
    async with rt.db.read() as conn:
        app = await app_store.get_application(conn, bot_id)
        owner = await user_store.get_user(conn, app.owner_id) if app is not None else None
        bot_user = await user_store.get_user(conn, bot_id)
    if app is None:
        raise UNKNOWN_APPLICATION
    body = application_json(app, owner=None, bot_user=bot_user, private=False)
    body["owner"] = public_user_json(owner)  # the bot sees its owner as others do
    return body
