"""The pages' templates (Jinja), the headers every page is sent with, and the error page.

One environment for every page: autoescaped, gettext installed (web/i18n.py; the locale is
the request's), and the image URL helpers. The error page is rendered from here, without a
request, so the edge can answer a page route's 413, 429, 500 or 503 with it too."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from fluxer_oauth.core import images
from fluxer_oauth.web import i18n
from fluxer_oauth.web.i18n import _

templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    extensions=["jinja2.ext.i18n"],
)
templates.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)
# Avatars and icons (templates/_images.html): same-origin URLs under the public URL, which
# the pages' CSP (img-src 'self') allows.
templates.globals["image_url"] = images.image_url
templates.globals["image_sizes"] = images.SIZES
templates.globals["current_locale"] = i18n.current_locale

PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    # Nothing to other sites. Not "no-referrer": with it browsers send "Origin: null" on our
    # own form POSTs, which same_origin must refuse (an attacker's page can send it too).
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Content-Language": "",  # set per answer: the locale the page was rendered in
}
HSTS = "max-age=63072000; includeSubDomains"


def page_headers(https: bool) -> dict[str, str]:
    headers = dict(PAGE_HEADERS)
    headers["Content-Language"] = i18n.current_locale()
    if https:
        headers["Strict-Transport-Security"] = HSTS
    return headers


# --- the error page ----------------------------------------------------------------------------

# Where a route outside the JSON API and the machine endpoints is a page: its errors are
# pages too (the edge and the framework's handlers ask ``is_page_path``).
NOT_PAGES = ("/api/", "/v1/", "/.well-known/", "/static/", "/avatars/", "/icons/")
NOT_PAGE_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/favicon.ico", "/api", "/v1"})


def is_page_path(path: str) -> bool:
    return not path.startswith(NOT_PAGES) and path not in NOT_PAGE_PATHS


def _headings() -> dict[int, tuple[str, str]]:
    """(heading, what it means) of each status a page can answer with, in the request's language."""
    return {
        400: (_("This request is invalid"), _("Something in the link or the form was not right.")),
        403: (_("Access refused"), _("You are not allowed to do this.")),
        404: (_("Page not found"), _("There is nothing at this address. Check the link, or go back.")),
        405: (_("Page not found"), _("There is nothing at this address. Check the link, or go back.")),
        413: (_("Too much data"), _("What was sent is larger than Fluxer accepts.")),
        429: (_("Slow down"), _("There were too many requests from you in a short time.")),
        500: (_("Something went wrong"), _("Something went wrong on our side. It was logged, and it is not your fault.")),
        503: (_("Temporarily unavailable"), _("Fluxer is temporarily unavailable. Try again in a moment.")),
    }


def retry_text(seconds: int) -> str:
    if seconds < 60:
        return i18n.ngettext("Try again in %(num)d second.", "Try again in %(num)d seconds.", seconds) % {
            "num": seconds}
    minutes = -(-seconds // 60)
    return i18n.ngettext("Try again in %(num)d minute.", "Try again in %(num)d minutes.", minutes) % {"num": minutes}


def error_html(status: int, *, public_url: str, request_id: str | None = None, message: str | None = None,
               heading: str | None = None, hint: str | None = None, retry_after: int | None = None,
               **context) -> str:
    """The error page: a heading and a sentence for the status (or the caller's own), when
    to retry (429, 503), and the request id where it helps support find the log line (5xx)."""
    default_heading, default_message = _headings().get(status, (_("This request is invalid"), ""))
    return templates.get_template("error.html").render(
        status=status, heading=heading or default_heading, message=message or default_message,
        hint=hint or "", retry=retry_text(retry_after) if retry_after else None,
        request_id=request_id if status >= 500 else None, public_url=public_url, **context,
    )


def error_answer(status: int, *, https: bool, public_url: str, request_id: str,
                 retry_after: str | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """The error page as an answer of the edge: (status, header pairs, HTML body)."""
    seconds = _seconds(retry_after)
    body = error_html(status, public_url=public_url, request_id=request_id, retry_after=seconds)
    headers = [(name.lower(), value) for name, value in page_headers(https).items()]
    headers.append(("content-type", "text/html; charset=utf-8"))
    if retry_after is not None:
        headers.append(("retry-after", retry_after))
    return status, headers, body.encode()


def _seconds(retry_after: str | None) -> int | None:
    try:
        return max(1, int(retry_after)) if retry_after is not None else None
    except ValueError:
        return None
