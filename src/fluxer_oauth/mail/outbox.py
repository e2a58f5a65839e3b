"""The outbox: mail handed over by a request is composed at once (in the request's language)
and delivered later by one background task per process, over SMTP with aiosmtplib, with
retries. Sending never fails the request that asked for it: a message that cannot be
delivered after its last attempt is logged (without its body: it may hold a link) and
counted (``fluxer_mail_total``).

Without SMTP settings, dev mode writes each message to the log (the developer follows the
link from there) and production has no mail at all: ``available`` is False and the flows
that need mail refuse with a clear error instead of pretending.

The queue lives in memory: a process that stops drains it for a few seconds first, and a
message still queued then is lost (a user asks for the link again). The links are never
stored unhashed, so there is nothing to deliver after a restart anyway."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Awaitable, Callable

import aiosmtplib

from fluxer_oauth.ops import metrics
from fluxer_oauth.ops.logging import log
from fluxer_oauth.settings import Settings

logger = logging.getLogger("fluxer.mail")

# Seconds before each retry of a message whose delivery failed (the last one repeats).
RETRY_DELAYS = (1.0, 5.0, 30.0, 120.0)
QUEUE_LIMIT = 10_000  # messages waiting in one process; beyond it new ones are dropped (and counted)
DRAIN_SECONDS = 5.0


class MailUnavailable(RuntimeError):
    """This server cannot send mail: production without FLUXER_SMTP_URL."""


@dataclass(frozen=True)
class Mail:
    """A message to send, before its words: ``kind`` names its templates (web/mails.py),
    ``values`` fill them (a link, a username)."""

    kind: str
    to: str
    values: dict = field(default_factory=dict)


Composer = Callable[[Mail, str], EmailMessage]  # (mail, sender) -> the message with its bodies


@dataclass
class _Queued:
    kind: str
    message: EmailMessage
    attempt: int = 0


class Outbox:
    def __init__(self, settings: Settings, compose: Composer) -> None:
        self._settings = settings
        self.compose = compose
        self._queue: asyncio.Queue[_Queued] | None = None
        self._worker: asyncio.Task | None = None
        self._retries: set[asyncio.Task] = set()
        self._deferred: set[asyncio.Task] = set()  # work that makes a mail, after its request
        self.pending = 0  # messages queued, waiting for a retry or being prepared: neither sent nor given up

    @property
    def available(self) -> bool:
        """Whether mail can reach anyone: SMTP is configured, or dev mode logs it."""
        return self._settings.mail_configured or self._settings.dev

    def require(self) -> None:
        if not self.available:
            raise MailUnavailable("this server cannot send mail: its operator has not configured SMTP "
                                  "(FLUXER_SMTP_URL)")

    def send(self, mail: Mail) -> None:
        """Compose ``mail`` now and queue it for delivery. Never raises: a failure is logged
        and counted. Call it after the transaction that made its link has committed. Without
        mail (production without SMTP) it does nothing: the flows that need mail refuse
        before (``require``), and a notice with nowhere to go is not sent."""
        if not self.available:
            return
        try:
            message = self.compose(mail, self._settings.mail_from)
        except Exception:
            logger.exception("composing a mail failed", extra={"fields": {"kind": mail.kind}})
            metrics.MAIL.labels(mail.kind, "failed").inc()
            return
        if not self._settings.mail_configured:  # dev mode: the developer reads it in the log
            _log_for_developer(mail.kind, message)
            metrics.MAIL.labels(mail.kind, "logged").inc()
            return
        queue = self._ensure_worker()
        try:
            queue.put_nowait(_Queued(mail.kind, message))
        except asyncio.QueueFull:
            log(logger, logging.ERROR, "mail dropped: the outbox is full", kind=mail.kind)
            metrics.MAIL.labels(mail.kind, "failed").inc()
            return
        self.pending += 1

    def defer(self, kind: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` (what writes and sends a mail of ``kind``) after the request that
        asks for it has its answer, so the answer's timing says nothing of what it does (a
        password reset for an account that exists). A failure is logged and counted;
        ``drain`` waits for it as for a queued message."""
        async def run() -> None:
            try:
                await work()
            except Exception:
                logger.exception("preparing a mail failed", extra={"fields": {"kind": kind}})
                metrics.MAIL.labels(kind, "failed").inc()
            finally:
                self.pending -= 1

        self.pending += 1
        task = asyncio.get_running_loop().create_task(run())
        self._deferred.add(task)
        task.add_done_callback(self._deferred.discard)

    def _ensure_worker(self) -> asyncio.Queue:
        if self._queue is None:
            self._queue = asyncio.Queue(QUEUE_LIMIT)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._deliver_forever())
        return self._queue

    async def _deliver_forever(self) -> None:
        while True:
            item = await self._queue.get()
            if await self._deliver(item):
                self.pending -= 1

    async def _deliver(self, item: _Queued) -> bool:
        """One attempt; whether the message is settled (sent, or given up after its last)."""
        item.attempt += 1
        try:
            await self._submit(item.message)
        except Exception as exc:  # every failure of the SMTP exchange or the network
            if item.attempt >= self._settings.mail_attempts:
                log(logger, logging.ERROR, "mail not delivered", kind=item.kind, attempts=item.attempt,
                    error=type(exc).__name__)
                metrics.MAIL.labels(item.kind, "failed").inc()
                return True
            log(logger, logging.WARNING, "mail delivery failed; retrying", kind=item.kind, attempt=item.attempt,
                error=type(exc).__name__)
            metrics.MAIL.labels(item.kind, "retried").inc()
            self._retry_later(item)
            return False
        metrics.MAIL.labels(item.kind, "sent").inc()
        return True

    def _retry_later(self, item: _Queued) -> None:
        delay = RETRY_DELAYS[min(item.attempt - 1, len(RETRY_DELAYS) - 1)]

        async def again():
            await asyncio.sleep(delay)
            self._queue.put_nowait(item)

        task = asyncio.get_running_loop().create_task(again())
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _submit(self, message: EmailMessage) -> None:
        server = self._settings.smtp
        await aiosmtplib.send(
            message, hostname=server.host, port=server.port, username=server.username, password=server.password,
            use_tls=server.tls == "tls", start_tls=server.tls == "starttls", timeout=self._settings.smtp_timeout,
        )

    async def drain(self, timeout: float = DRAIN_SECONDS) -> bool:
        """Wait until every queued message was delivered or given up (retries included), for
        at most ``timeout`` seconds; whether the outbox is empty."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.pending > 0:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def close(self, timeout: float = DRAIN_SECONDS) -> None:
        """At shutdown: deliver what is queued (for at most ``timeout``), then stop."""
        if not await self.drain(timeout):
            log(logger, logging.WARNING, "mail left undelivered at shutdown", messages=self.pending)
        tasks = [task for task in (self._worker, *self._retries, *self._deferred) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._worker, self._retries, self._deferred, self._queue, self.pending = None, set(), set(), None, 0


def new_message(sender: str, to: str, subject: str, text: str, html: str | None) -> EmailMessage:
    """A multipart/alternative message (plain text first, HTML the richer part)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].strip("> ") or None)
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


def _log_for_developer(kind: str, message: EmailMessage) -> None:
    """Dev mode without SMTP: the whole message in the log, so its link can be followed."""
    text = message.get_body(("plain",))
    log(logger, logging.INFO, "mail (dev mode: not sent, no FLUXER_SMTP_URL)", kind=kind, to=message["To"],
        subject=message["Subject"], body=text.get_content() if text is not None else "")
