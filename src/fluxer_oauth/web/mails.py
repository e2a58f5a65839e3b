"""What the mails say: a subject, a plain-text body and an HTML body for each kind of mail,
from templates under ``templates/mail/`` (``<kind>.txt``, ``<kind>.html``), translated like
the pages (the language of the request that caused the mail, web/i18n.py). ``install`` gives a
runtime its outbox (mail/outbox.py) with this as the composer."""

from __future__ import annotations

from email.message import EmailMessage

from fluxer_oauth.mail.outbox import Mail, Outbox, new_message
from fluxer_oauth.web.i18n import _
from fluxer_oauth.web.templating import templates


def _subjects() -> dict[str, str]:
    return {
        "verify_email": _("Verify your email address for Fluxer"),
        "password_reset": _("Reset your Fluxer password"),
        "password_changed": _("Your Fluxer password was changed"),
        "email_changed": _("The email address of your Fluxer account was changed"),
    }


KINDS = frozenset(("verify_email", "password_reset", "password_changed", "email_changed"))


def compose(mail: Mail, sender: str) -> EmailMessage:
    if mail.kind not in KINDS:
        raise ValueError(f"no templates for mail of kind {mail.kind!r}")
    context = {"subject": _subjects()[mail.kind], **mail.values}
    text = templates.get_template(f"mail/{mail.kind}.txt").render(**context)
    html = templates.get_template(f"mail/{mail.kind}.html").render(**context)
    return new_message(sender, mail.to, context["subject"], text, html)


def install(rt) -> None:
    """Give ``rt`` its mail outbox, composing with this module (the app and the CLI call it;
    once per runtime: a second call keeps the first outbox and its queue)."""
    if rt.mail is None:
        rt.mail = Outbox(rt.settings, compose)
