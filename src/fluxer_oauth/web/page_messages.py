"""What a page says about a refusal of the platform (an ``ApiError``).

The JSON API's messages are short lower-case phrases for developers, and speak of guilds;
a page speaks to a person, in their language, of servers, in whole sentences. Each code a
page can meet has its sentence here; a form error names the field as the form labels it.
Anything not listed falls back to the API's message as a sentence."""

from __future__ import annotations

from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.web.i18n import _
from fluxer_oauth.web.password_feedback import too_weak


def _sentences() -> dict[str, str]:
    return {
        "APPLICATION_HAS_NO_BOT": _("This application has no bot."),
        "APPLICATION_UNAVAILABLE": _("This application can no longer be authorized."),
        "BOT_ALREADY_IN_GUILD": _("This bot is already in that server."),
        "BOT_IS_PRIVATE": _("Only the owner of this private bot can add it."),
        "GUILD_REQUIRED": _("Choose a server to add the bot to."),
        "UNKNOWN_GUILD": _("That server does not exist, or you are not in it."),
        "MISSING_PERMISSIONS": _("You do not have the permissions this needs in that server."),
        "INVALID_LOGIN": _("Login or password is incorrect."),
        "INVALID_PASSWORD": _("Password confirmation failed."),
        "PUBLIC_CLIENT": _("A public client has no secret: make it confidential first."),
        "UNKNOWN_APPLICATION": _("There is no such application of yours."),
        "UNKNOWN_AUTHORIZATION": _("You have not authorized this application."),
        "RATE_LIMITED": _("Too many attempts. Wait a few minutes and try again."),
        # accounts: mailed links, two-factor sign-in
        "INVALID_LINK": _("This link is invalid, has expired or was already used."),
        "INVALID_MFA_CODE": _("This code is incorrect or was already used."),
        "INVALID_MFA_TICKET": _("Your sign-in took too long. Log in again."),
        "MFA_ALREADY_ENABLED": _("Two-factor sign-in is already on."),
        "MFA_NOT_ENABLED": _("Two-factor sign-in is not on."),
        "INVALID_MFA_SECRET": _("The setup form was changed or has expired. Scan the new QR code and try again."),
        "EMAIL_ALREADY_VERIFIED": _("This email address is already verified."),
        "MAIL_UNAVAILABLE": _("This server cannot send mail: its operator has not set it up."),
        "PASSWORD_TOO_WEAK": _("This password is too easy to guess."),
        # form fields
        "USERNAME_INVALID": _("2 to 32 characters: letters, digits, “_” and “.”."),
        "USERNAME_ALREADY_TAKEN": _("This username is already taken."),
        "EMAIL_INVALID": _("This is not a valid email address."),
        "EMAIL_ALREADY_TAKEN": _("This email address is already registered."),
        "BASE_TYPE_BAD_LENGTH": _("This is too short or too long."),
        "BASE_TYPE_MAX_LENGTH": _("This is too long."),
        "CONTROL_CHARACTERS": _("This must not contain control characters."),
        "FORMAT_CHARACTERS": _("This must not contain invisible formatting characters."),
        "TOO_MANY_REDIRECT_URIS": _("There are too many redirect URIs."),
        "REDIRECT_URI_INVALID": _("This redirect URI is not allowed (https, or http on localhost; no fragment)."),
        "URL_TYPE_INVALID_URL": _("This is not a well formed URL."),
        "URL_TYPE_INVALID_SCHEME": _("This must be an absolute https URL."),
        "IMAGE_INVALID": _("This image cannot be used (PNG, JPEG, WebP or GIF, within the size limit)."),
        "INVALID_ALGORITHM": _("Choose one of the offered algorithms."),
    }


def _field_labels() -> dict[str, str]:
    return {
        "username": _("Username"), "email": _("Email"), "password": _("Password"), "name": _("Name"),
        "description": _("Description"), "redirect_uris": _("Redirect URIs"), "icon": _("Icon"),
        "terms_of_service_url": _("Terms of Service URL"), "privacy_policy_url": _("Privacy Policy URL"),
        "id_token_signed_response_alg": _("id_token signing algorithm"), "permissions": _("Permissions"),
        "new_password": _("New password"),
    }


PASSWORD_FIELDS = frozenset(("password", "new_password"))


def _sentence(error: dict, sentences: dict[str, str]) -> str:
    """One field error as a sentence: a weak password says why (the estimator's reason,
    translated), a password of the wrong length the lengths allowed."""
    code = error.get("code", "")
    field = str(error.get("path", "")).split(".", 1)[0]
    if code == "PASSWORD_TOO_WEAK":
        return too_weak(error.get("reason"))
    if code == "BASE_TYPE_BAD_LENGTH" and field in PASSWORD_FIELDS:
        return _("Use 8 to 128 characters.")
    return sentences.get(code, as_sentence(str(error.get("message", ""))))


def as_sentence(text: str) -> str:
    """A developer's phrase as a line a person reads: capitalised, ending with a stop."""
    text = text.strip()
    if not text:
        return text
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def page_message(exc: ApiError) -> str:
    """The sentence a page shows for ``exc``: one per field error, joined."""
    sentences, labels = _sentences(), _field_labels()
    errors = exc.details.get("errors") or []
    if errors:
        lines = []
        for error in errors:
            path = str(error.get("path", ""))
            field = path.split(".", 1)[0]
            label = labels.get(field, field)
            sentence = _sentence(error, sentences)
            lines.append(_("%(field)s: %(problem)s") % {"field": label, "problem": sentence} if label else sentence)
        return " ".join(lines)
    return sentences.get(exc.code) or as_sentence(exc.message)


def field_messages(exc: ApiError) -> dict[str, str]:
    """For a form that shows each error under its field: the sentence of each field named by
    ``exc``'s errors (without the label: the field's own label stands above it), by field
    name; an error naming no field is under "". Empty when ``exc`` names no field."""
    sentences = _sentences()
    shown: dict[str, str] = {}
    for error in exc.details.get("errors") or []:
        field = str(error.get("path", "")).split(".", 1)[0]
        sentence = _sentence(error, sentences)
        shown[field] = f"{shown[field]} {sentence}" if field in shown else sentence
    return shown
