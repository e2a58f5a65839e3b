"""Why a password was refused, in the page's language.

The strength estimator (zxcvbn, platform/passwords.py) explains a weak password with one
English sentence, its warning or its first suggestion, which the API passes on as the
error's ``reason``. Every sentence it can give is listed here (marked for extraction, so
scripts/i18n puts them in the catalogs) and a page shows the translation; a sentence not
listed (a newer zxcvbn) becomes a general one rather than English on a French page.
tests/unit/test_password_feedback.py holds this list to zxcvbn's own."""

from __future__ import annotations

from fluxer_oauth.web.i18n import _


def N_(message: str) -> str:
    """Marks a sentence for extraction without translating it here."""
    return message


# zxcvbn.feedback's warnings and suggestions, word for word.
REASONS = frozenset({
    N_("Use a few words, avoid common phrases."),
    N_("No need for symbols, digits, or uppercase letters."),
    N_("Add another word or two. Uncommon words are better."),
    N_("Straight rows of keys are easy to guess."),
    N_("Short keyboard patterns are easy to guess."),
    N_("Use a longer keyboard pattern with more turns."),
    N_('Repeats like "aaa" are easy to guess.'),
    N_('Repeats like "abcabcabc" are only slightly harder to guess than "abc".'),
    N_("Avoid repeated words and characters."),
    N_('Sequences like "abc" or "6543" are easy to guess.'),
    N_("Avoid sequences."),
    N_("Recent years are easy to guess."),
    N_("Avoid recent years."),
    N_("Avoid years that are associated with you."),
    N_("Dates are often easy to guess."),
    N_("Avoid dates and years that are associated with you."),
    N_("This is a top-10 common password."),
    N_("This is a top-100 common password."),
    N_("This is a very common password."),
    N_("This is similar to a commonly used password."),
    N_("A word by itself is easy to guess."),
    N_("Names and surnames by themselves are easy to guess."),
    N_("Common names and surnames are easy to guess."),
    N_("Capitalization doesn't help very much."),
    N_("All-uppercase is almost as easy to guess as all-lowercase."),
    N_("Reversed words aren't much harder to guess."),
    N_("Predictable substitutions like '@' instead of 'a' don't help very much."),
})


def reason_text(reason: object) -> str:
    """The estimator's ``reason`` as the page's language says it."""
    if isinstance(reason, str) and reason in REASONS:
        return _(reason)
    return _("Add a few uncommon words to make it harder to guess.")


def too_weak(reason: object) -> str:
    """What a form says under a password the estimator found too easy to guess."""
    return _("This password is too easy to guess.") + " " + reason_text(reason)
