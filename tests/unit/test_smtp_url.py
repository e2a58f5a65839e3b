"""FLUXER_SMTP_URL (SPEC §8): one setting for where and how mail is submitted."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fluxer_oauth.settings import Settings, SmtpServer

pytestmark = pytest.mark.backend_independent


@pytest.mark.parametrize(("url", "expected"), [
    ("smtp://127.0.0.1", SmtpServer("127.0.0.1", 25, "none", None, None)),
    ("smtp://relay.example:2525", SmtpServer("relay.example", 2525, "none", None, None)),
    ("smtp://fluxer:s%40cret%2Fx@smtp.example?starttls=1",
     SmtpServer("smtp.example", 587, "starttls", "fluxer", "s@cret/x")),
    ("smtps://fluxer:pw@smtp.example", SmtpServer("smtp.example", 465, "tls", "fluxer", "pw")),
    ("smtps://fluxer:pw@smtp.example:2465", SmtpServer("smtp.example", 2465, "tls", "fluxer", "pw")),
])
def test_the_smtp_url_names_host_port_tls_and_credentials(url, expected):
    settings = Settings(smtp_url=url)
    assert settings.mail_configured and settings.smtp == expected


@pytest.mark.parametrize("url", ["http://smtp.example", "smtp://", "smtps://h?starttls=1", "smtp://h:99999"])
def test_a_malformed_smtp_url_is_refused_at_start_with_what_is_expected(url):
    with pytest.raises(ValidationError, match="FLUXER_SMTP_URL"):
        Settings(smtp_url=url)


def test_without_an_smtp_url_there_is_no_mail_server():
    settings = Settings(smtp_url="  ")
    assert not settings.mail_configured and settings.smtp is None
