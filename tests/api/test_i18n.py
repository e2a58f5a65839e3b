"""The pages' translations: every page string is in every shipped catalog, the locale follows
Accept-Language with English as the fallback, and a page really is shown in it."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from fluxer_oauth.web import i18n

WEB = Path(i18n.__file__).parent
METHOD_MAP = [("**.py", "python"), ("templates/**.html", "jinja2"), ("templates/mail/**.txt", "jinja2")]
OPTIONS = {"templates/**.html": {"extensions": "jinja2.ext.i18n"},
           "templates/mail/**.txt": {"extensions": "jinja2.ext.i18n"}}


def _source_messages() -> set:
    """Every message the pages' code and templates pass to gettext, extracted as scripts/i18n does."""
    found = set()
    for _filename, _lineno, message, _comments, _context in extract_from_dir(
            str(WEB), METHOD_MAP, options_map=OPTIONS):
        found.add(message if isinstance(message, str) else tuple(message))
    return found


def _catalog(locale: str) -> Catalog:
    with (i18n.LOCALES_DIR / locale / "LC_MESSAGES" / "messages.po").open("rb") as source:
        return read_po(source, locale=locale)


SHIPPED = [locale for locale in i18n.LOCALES if locale != i18n.DEFAULT_LOCALE]


def test_a_second_locale_ships():
    assert "fr" in SHIPPED


@pytest.mark.parametrize("locale", SHIPPED)
def test_every_page_string_is_translated(locale):
    catalog = _catalog(locale)
    missing = []
    for message in _source_messages():
        msgid = message[0] if isinstance(message, tuple) else message
        entry = catalog.get(msgid)
        translated = entry is not None and not entry.fuzzy and (
            all(entry.string) if isinstance(entry.string, (tuple, list)) else bool(entry.string))
        if not translated:
            missing.append(msgid)
    assert not missing, f"{len(missing)} untranslated in {locale} (run scripts/i18n, then translate): {missing[:10]}"


@pytest.mark.parametrize("locale", SHIPPED)
def test_translations_keep_their_placeholders(locale):
    """A translation that drops or renames a %(name)s would fail at render time."""
    problems = []
    for message, errors in _catalog(locale).check():
        problems += [f"{message.id!r}: {error}" for error in errors]
    assert not problems, problems[:10]


@pytest.mark.parametrize("header,expected", [
    (None, "en"), ("", "en"), ("fr", "fr"), ("fr-CA", "fr"), ("FR_ca", "fr"), ("de, fr;q=0.5", "fr"),
    ("en;q=0.9, fr", "fr"), ("fr;q=0, en", "en"), ("de", "en"), ("*", "en"), ("fr;q=nonsense, en", "en"),
    ("x" * 5000, "en"),
])
def test_locale_follows_accept_language_with_english_fallback(header, expected):
    assert i18n.negotiate(header) == expected


async def test_the_login_page_speaks_the_browsers_language(client):
    french = await client.get("/login", headers={"accept-language": "fr-FR,fr;q=0.9,en;q=0.8"})
    english = await client.get("/login", headers={"accept-language": "de"})
    assert french.status_code == english.status_code == 200
    assert '<html lang="fr">' in french.text and french.headers["content-language"] == "fr"
    assert '<html lang="en">' in english.text and english.headers["content-language"] == "en"
    assert french.text != english.text
    assert "Log in to Fluxer" in english.text and "Log in to Fluxer" not in french.text


async def test_an_error_page_is_translated_too(client):
    response = await client.get("/no/such/page", headers={"accept-language": "fr"})
    assert response.status_code == 404 and response.headers["content-type"].startswith("text/html")
    assert "Page not found" not in response.text and '<html lang="fr">' in response.text


async def test_the_json_api_is_not_translated(client):
    response = await client.get("/api/v1/users/@me", headers={"accept-language": "fr"})
    assert response.status_code == 401 and response.headers["content-type"] == "application/json"
    assert "content-language" not in response.headers
