"""The admin scope (SPEC §6): staff look up users, disable users and applications, revoke
any grant and read the audit log. Every action is written to the audit log."""

from __future__ import annotations

import json

from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.timefmt import iso, now
from fluxer_oauth.grants import endings
from fluxer_oauth.platform.accounts import user_json
from fluxer_oauth.platform.applications import UNKNOWN_APPLICATION, application_json
from fluxer_oauth.platform.authorizations import list_authorizations
from fluxer_oauth.platform.guilds import user_connections, user_guilds
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import applications as app_store
from fluxer_oauth.store import audit
from fluxer_oauth.store import users as user_store

UNKNOWN_USER = ApiError(404, "UNKNOWN_USER", "unknown user")


def admin_user_json(user) -> dict:
    return {
        **user_json(user, with_email=True),
        "staff": bool(user.staff),
        "disabled": user.disabled_at is not None,
        "created_at": iso(user.created_at),
    }


async def _log(rt: Runtime, conn, actor_id: int, action: str, **fields) -> None:
    await audit.record(conn, id=rt.ids.next(), now=now(), action=f"admin.{action}", actor_id=actor_id, **fields)


async def search_users(rt: Runtime, actor_id: int, text: str | None, limit: int) -> list[dict]:
    async with rt.db.write() as conn:
        rows = await user_store.search_users(conn, text, limit)
        await _log(rt, conn, actor_id, "users.searched", details={"query": (text or "")[:100]})
    return [admin_user_json(row) for row in rows]


async def user_details(rt: Runtime, actor_id: int, user_id: int) -> dict:
    async with rt.db.write() as conn:
        user = await user_store.get_user(conn, user_id)
        if user is None:
            raise UNKNOWN_USER
        owned = await app_store.list_owned(conn, user_id)
        await _log(rt, conn, actor_id, "user.viewed", target_user_id=user_id)
    return {
        "user": admin_user_json(user),
        "guilds": await user_guilds(rt, user_id),
        "connections": await user_connections(rt, user_id),
        "applications": [application_json(app, owner=user, bot_user=None, private=True) for app in owned],
        "authorizations": await list_authorizations(rt, user_id),
    }


async def set_user_disabled(rt: Runtime, actor_id: int, user_id: int, disabled: bool) -> None:
    """Disabling ends every session, grant and token of the user, and every grant and token
    of the applications they own, in the same transaction (endings.end_user)."""
    at = now()
    async with rt.db.write() as conn:
        user = await user_store.get_user(conn, user_id)
        if user is None:
            raise UNKNOWN_USER
        if disabled:  # the ending first: it locks before any row is written (grants/endings.py)
            await endings.end_user(rt, conn, user_id, by="user_disabled", actor_id=actor_id, at=at)
        await user_store.set_user_fields(conn, user_id, disabled_at=at if disabled else None)
        await _log(rt, conn, actor_id, "user.disabled" if disabled else "user.enabled", target_user_id=user_id)


async def list_applications(rt: Runtime, actor_id: int | None, limit: int) -> list[dict]:
    async with rt.db.write() as conn:
        apps = await app_store.list_all(conn, limit)
        owners = await user_store.get_users(conn, [app.owner_id for app in apps])
        if actor_id is not None:
            await _log(rt, conn, actor_id, "applications.listed")
    return [application_json(app, owner=owners[app.owner_id], bot_user=None, private=True) for app in apps]


async def set_application_disabled(rt: Runtime, actor_id: int | None, application_id: int, disabled: bool) -> None:
    """Disabling ends every grant, code and token of the application for good (re-enabling
    brings none back); its client and bot credentials are refused while it is disabled."""
    at = now()
    async with rt.db.write() as conn:
        if await app_store.get_application(conn, application_id) is None:
            raise UNKNOWN_APPLICATION
        if disabled:  # the ending first: it locks before any row is written (grants/endings.py)
            await endings.end_application(rt, conn, application_id, by="application_disabled",
                                          actor_id=actor_id, at=at)
        await app_store.update_application(conn, application_id, disabled_at=at if disabled else None)
        await _log_application(rt, conn, actor_id, application_id, "disabled" if disabled else "enabled", at)


async def set_application_trusted(rt: Runtime, actor_id: int | None, application_id: int, trusted: bool) -> None:
    """Untrusting ends every grant that carries the admin scope, which only trusted
    applications may hold."""
    at = now()
    async with rt.db.write() as conn:
        if await app_store.get_application(conn, application_id) is None:
            raise UNKNOWN_APPLICATION
        if not trusted:  # the ending first: it locks before any row is written (grants/endings.py)
            await endings.end_admin_access(rt, conn, application_id=application_id, by="application_untrusted",
                                           actor_id=actor_id, at=at)
        await app_store.update_application(conn, application_id, trusted=trusted)
        await _log_application(rt, conn, actor_id, application_id, "trusted" if trusted else "untrusted", at)


async def _log_application(rt: Runtime, conn, actor_id: int | None, application_id: int, outcome: str,
                           at: float) -> None:
    await audit.record(conn, id=rt.ids.next(), now=at, actor_id=actor_id, application_id=application_id,
                       action=f"admin.application.{outcome}")


async def set_staff(rt: Runtime, actor_id: int | None, user_id: int, staff: bool) -> None:
    """Removing staff ends every grant carrying the admin scope that the user approved."""
    at = now()
    async with rt.db.write() as conn:
        if await user_store.get_user(conn, user_id) is None:
            raise UNKNOWN_USER
        if not staff:  # the ending first: it locks before any row is written (grants/endings.py)
            await endings.end_admin_access(rt, conn, user_id=user_id, by="staff_removed", actor_id=actor_id, at=at)
        await user_store.set_user_fields(conn, user_id, staff=staff)
        await audit.record(
            conn, id=rt.ids.next(), now=at, actor_id=actor_id, target_user_id=user_id,
            action="admin.user.staff_granted" if staff else "admin.user.staff_removed",
        )


async def revoke_grant(rt: Runtime, actor_id: int, user_id: int, application_id: int) -> None:
    async with rt.db.write() as conn:
        ended = await endings.end_grant(rt, conn, user_id=user_id, application_id=application_id, by="admin",
                                        actor_id=actor_id, at=now())
    if not ended:  # raised after the commit: an error never rolls an ending back
        raise ApiError(404, "UNKNOWN_AUTHORIZATION", "no such grant")


async def audit_entries(rt: Runtime, actor_id: int, action: str | None, limit: int) -> list[dict]:
    async with rt.db.write() as conn:
        rows = await audit.entries(conn, action=action, limit=limit)
        await _log(rt, conn, actor_id, "audit_log.read", details={"action": action})
    return [
        {
            "id": str(row.id),
            "created_at": iso(row.created_at),
            "action": row.action,
            "actor_id": str(row.actor_id) if row.actor_id is not None else None,
            "application_id": str(row.application_id) if row.application_id is not None else None,
            "target_user_id": str(row.target_user_id) if row.target_user_id is not None else None,
            "details": json.loads(row.details),
        }
        for row in rows
    ]
