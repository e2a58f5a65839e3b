"""/api/v1/admin/*: a staff session, or a bearer token with the admin scope of a staff user
(the admin scope is staff-only: its routes refuse other users, see web/api.py)."""

from __future__ import annotations

from starlette.requests import Request

from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.ids import parse_snowflake
from fluxer_oauth.platform import admin
from fluxer_oauth.platform.admin import UNKNOWN_USER
from fluxer_oauth.platform.applications import UNKNOWN_APPLICATION
from fluxer_oauth.web.api import BEARER_AUTH, SESSION_AUTH, router
from fluxer_oauth.web.caller import Caller, runtime
from fluxer_oauth.web.responses import json_response, no_content
from fluxer_oauth.web.schemas import AdminUser, AdminUserDetails, Application, AuditEntry

STAFF = (SESSION_AUTH, BEARER_AUTH)
ERRORS = (401, 403, 404)


def _page_size(request: Request) -> int:
    raw = request.query_params.get("limit", "50")
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= 200:
        raise ApiError(400, "INVALID_FORM_BODY", "limit must be 1-200",
                       errors=[{"path": "limit", "code": "NUMBER_OUT_OF_RANGE", "message": "must be 1-200"}])
    return int(raw)


def _path_id(request: Request, name: str, unknown: ApiError) -> int:
    value = parse_snowflake(request.path_params[name])
    if value is None:
        raise unknown
    return value


@router.route("GET", "/admin/users", summary="Search users by username or email prefix", auth=STAFF, scope="admin",
              response=list[AdminUser], errors=(400, 401, 403), tags=("admin",))
async def search_users(request: Request, caller: Caller):
    staff = caller.user
    text = request.query_params.get("q", "")[:100]
    return json_response(await admin.search_users(runtime(request), staff.id, text, _page_size(request)))


@router.route("GET", "/admin/users/{user_id}", summary="Everything about a user", auth=STAFF, scope="admin",
              response=AdminUserDetails, errors=ERRORS, tags=("admin",))
async def user_details(request: Request, caller: Caller):
    staff = caller.user
    return json_response(await admin.user_details(runtime(request), staff.id, _path_id(request, "user_id", UNKNOWN_USER)))


@router.route("POST", "/admin/users/{user_id}/disable", summary="Disable a user, ending their sessions and grants",
              auth=STAFF, scope="admin", status=204, errors=ERRORS, tags=("admin",))
async def disable_user(request: Request, caller: Caller):
    staff = caller.user
    await admin.set_user_disabled(runtime(request), staff.id, _path_id(request, "user_id", UNKNOWN_USER), True)
    return no_content()


@router.route("POST", "/admin/users/{user_id}/enable", summary="Enable a disabled user", auth=STAFF, scope="admin",
              status=204, errors=ERRORS, tags=("admin",))
async def enable_user(request: Request, caller: Caller):
    staff = caller.user
    await admin.set_user_disabled(runtime(request), staff.id, _path_id(request, "user_id", UNKNOWN_USER), False)
    return no_content()


@router.route("GET", "/admin/applications", summary="All applications", auth=STAFF, scope="admin",
              response=list[Application], errors=(400, 401, 403), tags=("admin",))
async def list_applications(request: Request, caller: Caller):
    staff = caller.user
    return json_response(await admin.list_applications(runtime(request), staff.id, _page_size(request)))


@router.route("POST", "/admin/applications/{application_id}/disable",
              summary="Disable an application: its tokens stop working, its requests are refused", auth=STAFF,
              scope="admin", status=204, errors=ERRORS, tags=("admin",))
async def disable_application(request: Request, caller: Caller):
    staff = caller.user
    application_id = _path_id(request, "application_id", UNKNOWN_APPLICATION)
    await admin.set_application_disabled(runtime(request), staff.id, application_id, True)
    return no_content()


@router.route("POST", "/admin/applications/{application_id}/enable", summary="Enable a disabled application",
              auth=STAFF, scope="admin", status=204, errors=ERRORS, tags=("admin",))
async def enable_application(request: Request, caller: Caller):
    staff = caller.user
    application_id = _path_id(request, "application_id", UNKNOWN_APPLICATION)
    await admin.set_application_disabled(runtime(request), staff.id, application_id, False)
    return no_content()


@router.route("DELETE", "/admin/grants/{user_id}/{application_id}", summary="Revoke any user's grant", auth=STAFF,
              scope="admin", status=204, errors=ERRORS, tags=("admin",))
async def revoke_grant(request: Request, caller: Caller):
    staff = caller.user
    await admin.revoke_grant(runtime(request), staff.id, _path_id(request, "user_id", UNKNOWN_USER),
                             _path_id(request, "application_id", UNKNOWN_APPLICATION))
    return no_content()


@router.route("GET", "/admin/audit-log", summary="The audit log, newest first", auth=STAFF, scope="admin",
              response=list[AuditEntry], errors=(400, 401, 403), tags=("admin",))
async def audit_log(request: Request, caller: Caller):
    staff = caller.user
    action = request.query_params.get("action") or None
    return json_response(
        await admin.audit_entries(runtime(request), staff.id, action[:64] if action else None, _page_size(request))
    )
