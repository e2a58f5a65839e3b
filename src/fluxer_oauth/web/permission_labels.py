"""What the pages call permissions and scopes, in the reader's language.

``core.permissions`` and ``core.scopes`` are pure (no web import), so the translated names
live here: each label a literal ``_()`` (so ``scripts/i18n`` extracts it), built at request
time by a function (never at import time, when no locale is set). Permissions are named as
Discord names them ("Manage Server", "Send TTS Messages", "Use Voice Activity")."""

from __future__ import annotations

from fluxer_oauth.core.permissions import permission_names
from fluxer_oauth.core.scopes import SCOPE
from fluxer_oauth.web.i18n import _


def permission_labels() -> dict[str, str]:
    """Every permission of ``PERMISSIONS``, by name, as a person reads it."""
    return {
        "CREATE_INSTANT_INVITE": _("Create Invite"),
        "KICK_MEMBERS": _("Kick Members"),
        "BAN_MEMBERS": _("Ban Members"),
        "ADMINISTRATOR": _("Administrator"),
        "MANAGE_CHANNELS": _("Manage Channels"),
        "MANAGE_GUILD": _("Manage Server"),
        "ADD_REACTIONS": _("Add Reactions"),
        "VIEW_AUDIT_LOG": _("View Audit Log"),
        "PRIORITY_SPEAKER": _("Priority Speaker"),
        "STREAM": _("Video"),
        "VIEW_CHANNEL": _("View Channels"),
        "SEND_MESSAGES": _("Send Messages"),
        "SEND_TTS_MESSAGES": _("Send TTS Messages"),
        "MANAGE_MESSAGES": _("Manage Messages"),
        "EMBED_LINKS": _("Embed Links"),
        "ATTACH_FILES": _("Attach Files"),
        "READ_MESSAGE_HISTORY": _("Read Message History"),
        "MENTION_EVERYONE": _("Mention @everyone, @here and All Roles"),
        "USE_EXTERNAL_EMOJIS": _("Use External Emojis"),
        "CONNECT": _("Connect"),
        "SPEAK": _("Speak"),
        "MUTE_MEMBERS": _("Mute Members"),
        "DEAFEN_MEMBERS": _("Deafen Members"),
        "MOVE_MEMBERS": _("Move Members"),
        "USE_VAD": _("Use Voice Activity"),
        "CHANGE_NICKNAME": _("Change Nickname"),
        "MANAGE_NICKNAMES": _("Manage Nicknames"),
        "MANAGE_ROLES": _("Manage Roles"),
        "MANAGE_WEBHOOKS": _("Manage Webhooks"),
        "MANAGE_EXPRESSIONS": _("Manage Expressions"),
        "USE_EXTERNAL_STICKERS": _("Use External Stickers"),
        "MODERATE_MEMBERS": _("Timeout Members"),
        "CREATE_EXPRESSIONS": _("Create Expressions"),
        "PIN_MESSAGES": _("Pin Messages"),
        "BYPASS_SLOWMODE": _("Bypass Slowmode"),
        "UPDATE_RTC_REGION": _("Set Voice Region"),
        "VIEW_CHANNEL_MEMBERS": _("View Channel Members"),
    }


def permission_label(name: str) -> str:
    """One permission's label; an unknown name as it is."""
    return permission_labels().get(name, name)


def labelled_permissions(value: int) -> list[tuple[str, str]]:
    """(name, label) of each permission set in ``value``, in bit order."""
    labels = permission_labels()
    return [(name, labels.get(name, name)) for name in permission_names(value)]


def scope_descriptions() -> dict[str, str]:
    """What the consent page says each scope allows (``core.scopes`` holds the English)."""
    return {
        "identify": _("Know your username, avatar and profile details"),
        "email": _("Know your email address and whether it is verified"),
        "guilds": _("See the servers you are in and your permissions there"),
        "connections": _("See the accounts you have connected (GitHub, Bluesky, ...)"),
        "bot": _("Add a bot to a server you manage"),
        "admin": _("Administer Fluxer: all user data and sensitive operations"),
        "guilds.join": _("Join servers for you"),
        "guilds.members.read": _("Read your member info (nickname and roles) in servers you are in"),
        "openid": _("Sign you in to the app with your Fluxer account"),
    }


def scope_description(name: str) -> str:
    """One scope's description in the reader's language (the English of ``core.scopes``
    for a scope this table does not have)."""
    return scope_descriptions().get(name) or SCOPE[name].description

