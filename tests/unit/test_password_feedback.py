"""The estimator's reasons a page translates (web/password_feedback.py) are all of zxcvbn's:
a sentence missing from the list would be shown as the general one, however specific."""

from __future__ import annotations

from pathlib import Path

import pytest
import zxcvbn.feedback
from babel.messages.extract import extract_python

from fluxer_oauth.platform.passwords import DEFAULT_REASON, weakness
from fluxer_oauth.web import i18n, password_feedback

pytestmark = pytest.mark.backend_independent  # pure code: no store


def _zxcvbn_sentences() -> set[str]:
    with Path(zxcvbn.feedback.__file__).open("rb") as source:
        return {message for _line, _func, message, _comments in extract_python(source, {"_": None}, [], {})}


def test_every_sentence_of_the_estimator_is_listed():
    sentences = _zxcvbn_sentences()
    assert len(sentences) > 20  # the extraction found them
    assert sentences == password_feedback.REASONS
    assert DEFAULT_REASON in password_feedback.REASONS


@pytest.mark.parametrize("password", ["password1", "qwertyuiop", "aaaaaaaaaa", "abcdefgh1", "Jennifer1990"])
def test_a_weak_passwords_reason_is_translated(password):
    reason = weakness(password, min_score=3)
    assert reason in password_feedback.REASONS
    i18n.use_locale("fr")
    try:
        assert password_feedback.reason_text(reason) == i18n.CATALOGS["fr"].gettext(reason) != reason
    finally:
        i18n.use_locale(None)


def test_an_unknown_reason_becomes_the_general_sentence():
    assert password_feedback.reason_text("Some sentence of a newer zxcvbn.") == \
        "Add a few uncommon words to make it harder to guess."
    assert password_feedback.reason_text(None) == password_feedback.reason_text(42)
