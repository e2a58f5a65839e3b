"""A real SMTP server on loopback for the tests (aiosmtpd), and reading what it received:
the messages, their text and HTML bodies, and the links in them."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller

LINK = re.compile(r"https?://[^\s\"'<>]+")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Collector:
    def __init__(self, server: "MailServer") -> None:
        self.server = server

    async def handle_DATA(self, _smtp, _session, envelope):
        if self.server.refuse_next > 0:  # a server that cannot take mail just now (451)
            self.server.refuse_next -= 1
            return "451 4.3.0 try again later"
        message = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        with self.server.lock:
            self.server.received.append((list(envelope.rcpt_tos), message))
        return "250 OK"


class MailServer:
    """``received``: (recipients, message) in arrival order. ``refuse_next``: how many of the
    next messages to answer with a temporary failure (451)."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.received: list[tuple[list[str], EmailMessage]] = []
        self.refuse_next = 0
        self.lock = threading.Lock()
        self._controller = Controller(_Collector(self), hostname=self.host, port=self.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def settings(self) -> dict:
        """The settings overrides that send the app's mail here."""
        return {"smtp_url": f"smtp://{self.host}:{self.port}", "mail_from": "Fluxer <no-reply@fluxer.test>"}

    def messages_to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [message for recipients, message in self.received
                    if address.lower() in (r.lower() for r in recipients)]

    async def wait_for(self, address: str, count: int = 1, timeout: float = 10.0) -> list[EmailMessage]:
        """The first ``count`` messages to ``address``, waiting for them to arrive."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages_to(address)
            if len(messages) >= count:
                return messages
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} mail(s) to {address} did not arrive; got {len(messages)}")
            await asyncio.sleep(0.02)


def text_of(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


def html_of(message: EmailMessage) -> str:
    return message.get_body(("html",)).get_content()


def link_in(message: EmailMessage, path: str) -> str:
    """The link to ``path`` (e.g. "/reset-password") in the message's text body."""
    for link in LINK.findall(text_of(message)):
        if path in link:
            return link
    raise AssertionError(f"no {path} link in: {text_of(message)!r}")
