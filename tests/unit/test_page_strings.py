"""Every word a page shows goes through gettext: a template's own text (outside ``{{ }}`` and
``{% %}``) and its human-readable attributes hold no words, only markup, so nothing is left
in English when the page is shown in another language (tests/api/test_i18n.py checks that
what goes through gettext is translated)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fluxer_oauth.web.templating import templates

pytestmark = pytest.mark.backend_independent  # pure code: no store

TEMPLATES = sorted((Path(templates.loader.searchpath[0])).glob("*.html"))
READ_ATTRIBUTES = {"title", "alt", "placeholder", "aria-label"}
WORD = re.compile(r"[^\W\d_]{2,}")
# Not words to translate: the brand, example values, class names given through blocks
# ({% block width %}), a path given through a block, attribute text assembled by a tag.
NOT_WORDS = re.compile(
    r"^(Fluxer|XXXX-XXXX|https://example\.com/\w+|wide|portal|/activate|"
    r"[\w-]+=\"[^\"]*\"?|autofocus)$")
EXPRESSION = "\x00"


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.words: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._hidden += 1
        for name, value in attrs:
            if name in READ_ATTRIBUTES and value:
                self._check(value)

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._hidden -= 1

    def handle_data(self, data):
        if not self._hidden:
            self._check(data)

    def _check(self, text: str) -> None:
        for piece in text.replace(EXPRESSION, " ").replace("·", " ").split():
            if WORD.search(piece) and not NOT_WORDS.match(piece):
                self.words.append(piece)


def _untranslated_words(source: str) -> list[str]:
    parts = [value if kind == "data" else EXPRESSION for _line, kind, value in templates.lex(source)]
    parser = _Text()
    parser.feed("".join(parts))
    return parser.words


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: path.name)
def test_templates_show_no_untranslated_words(template):
    assert _untranslated_words(template.read_text()) == []


def test_the_check_finds_a_bare_word():
    assert _untranslated_words('<p>{{ _("Hello") }} world</p><img alt="{{ x }} picture" class="big">') == [
        "world", "picture"]
