"""The pages' languages: gettext catalogs (Babel) and the locale of the request.

Every string a page shows goes through ``gettext`` (``_`` in Python, ``_()`` and
``{% trans %}`` in templates). The catalogs are the ``.po`` files under ``locales/``
(``scripts/i18n`` extracts and updates them), compiled in memory when the process starts,
so there is no build step and no binary file in the tree. The locale is negotiated from
``Accept-Language`` once per page request (``use_locale``, called by the edge for every
request that is not the JSON API) and held in a context variable, so a handler's own
strings and its template speak the same language. English is the source language and the
fallback.
"""

from __future__ import annotations

import contextvars
import functools
import gettext as _gettext
from io import BytesIO
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALES_DIR = Path(__file__).parent / "locales"
DOMAIN = "messages"
DEFAULT_LOCALE = "en"
MAX_ACCEPT_LANGUAGE = 512  # longer headers are read up to here


def _load() -> dict[str, _gettext.NullTranslations]:
    catalogs: dict[str, _gettext.NullTranslations] = {DEFAULT_LOCALE: _gettext.NullTranslations()}
    for po_file in sorted(LOCALES_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        with po_file.open("rb") as source:
            catalog = read_po(source)
        compiled = BytesIO()
        write_mo(compiled, catalog, use_fuzzy=False)
        compiled.seek(0)
        catalogs[po_file.parent.parent.name] = Translations(compiled, domain=DOMAIN)
    return catalogs


CATALOGS = _load()
LOCALES = tuple(CATALOGS)  # what the pages can be shown in
_current = contextvars.ContextVar("locale", default=DEFAULT_LOCALE)


def negotiate(accept_language: str | None) -> str:
    """The best of LOCALES for an ``Accept-Language`` header (RFC 9110 §12.5.4: q-values,
    a primary tag matching its regional variants), else English. Only the header's first
    MAX_ACCEPT_LANGUAGE characters are read, and only they are kept by the cache."""
    if not accept_language:
        return DEFAULT_LOCALE
    return _negotiate(accept_language[:MAX_ACCEPT_LANGUAGE])


@functools.lru_cache(maxsize=256)
def _negotiate(accept_language: str) -> str:
    ranked = []
    for position, item in enumerate(accept_language.split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag.strip().lower().replace("_", "-")))
    for _quality, _position, tag in sorted(ranked):
        primary = tag.split("-", 1)[0]
        if primary in CATALOGS:
            return primary
    return DEFAULT_LOCALE


def use_locale(accept_language: str | None) -> str:
    """Set the locale of the current request (its task's context) and return it."""
    locale = negotiate(accept_language)
    _current.set(locale)
    return locale


def current_locale() -> str:
    return _current.get()


def gettext(message: str) -> str:
    return CATALOGS[_current.get()].gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    return CATALOGS[_current.get()].ngettext(singular, plural, count)


_ = gettext
