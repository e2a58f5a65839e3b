"""Guild permission bits (SPEC §5.1) and their computation."""

from __future__ import annotations

PERMISSION_BITS: dict[str, int] = {
    "CREATE_INSTANT_INVITE": 0, "KICK_MEMBERS": 1, "BAN_MEMBERS": 2, "ADMINISTRATOR": 3,
    "MANAGE_CHANNELS": 4, "MANAGE_GUILD": 5, "ADD_REACTIONS": 6, "VIEW_AUDIT_LOG": 7,
    "PRIORITY_SPEAKER": 8, "STREAM": 9, "VIEW_CHANNEL": 10, "SEND_MESSAGES": 11,
    "SEND_TTS_MESSAGES": 12, "MANAGE_MESSAGES": 13, "EMBED_LINKS": 14, "ATTACH_FILES": 15,
    "READ_MESSAGE_HISTORY": 16, "MENTION_EVERYONE": 17, "USE_EXTERNAL_EMOJIS": 18,
    "CONNECT": 20, "SPEAK": 21, "MUTE_MEMBERS": 22, "DEAFEN_MEMBERS": 23, "MOVE_MEMBERS": 24,
    "USE_VAD": 25, "CHANGE_NICKNAME": 26, "MANAGE_NICKNAMES": 27, "MANAGE_ROLES": 28,
    "MANAGE_WEBHOOKS": 29, "MANAGE_EXPRESSIONS": 30, "USE_EXTERNAL_STICKERS": 37,
    "MODERATE_MEMBERS": 40, "CREATE_EXPRESSIONS": 43, "PIN_MESSAGES": 51,
    "BYPASS_SLOWMODE": 52, "UPDATE_RTC_REGION": 53, "VIEW_CHANNEL_MEMBERS": 54,
}

PERMISSIONS: dict[str, int] = {name: 1 << bit for name, bit in PERMISSION_BITS.items()}
ALL_PERMISSIONS = 0
for _value in PERMISSIONS.values():
    ALL_PERMISSIONS |= _value

ADMINISTRATOR = PERMISSIONS["ADMINISTRATOR"]
MANAGE_GUILD = PERMISSIONS["MANAGE_GUILD"]
MANAGE_ROLES = PERMISSIONS["MANAGE_ROLES"]
CREATE_INSTANT_INVITE = PERMISSIONS["CREATE_INSTANT_INVITE"]

MAX_PERMISSIONS_TEXT = 20  # digits of a 64-bit value


def parse_permissions(text: str) -> int | None:
    """A permission bitfield from its decimal form; None when it is not a non-negative integer."""
    text = text.strip()
    if not text or len(text) > MAX_PERMISSIONS_TEXT or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value < (1 << 64) else None


def defined_only(value: int) -> int:
    """Drop the bits the platform does not define."""
    return value & ALL_PERMISSIONS


def compute_permissions(*, is_owner: bool, role_permissions) -> int:
    """A member's permissions: owners and ADMINISTRATOR holders have all; others the OR of
    their roles (the caller includes @everyone)."""
    if is_owner:
        return ALL_PERMISSIONS
    value = 0
    for permissions in role_permissions:
        value |= permissions
    if value & ADMINISTRATOR:
        return ALL_PERMISSIONS
    return value & ALL_PERMISSIONS


def permission_names(value: int) -> list[str]:
    return [name for name, bit in PERMISSIONS.items() if value & bit]


def has(value: int, required: int) -> bool:
    return value & ADMINISTRATOR != 0 or value & required == required
