"""Job callbacks: POST a job's final JSON to the URL given at its creation, once, when it
finishes; retried with exponential backoff and jitter.

A watcher thread in the API process (the only door that takes a ``callback_url``) looks in SQL
for finished jobs with a callback due, claims each one and hands it to a deliverer: the
``embedq.deliver_callback`` task on the ``default`` queue with a broker, a small thread pool
of its own without. Nothing waits on it: no worker that finishes a job, no request. The state
of each callback lives in SQL (``job_callbacks``), so a restart or a dead deliverer loses none:
a claim is a lease that runs out.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import urlsplit

import httpx

from embedq.storage.callbacks import add_callback, claim, due_callbacks, record_attempt
from embedq.storage.db import transaction
from embedq.storage.jobs import job_view
from embedq.storage.models import Job, JobCallback, utcnow
from embedq.tasks.errors import BadInput
from embedq.tasks.names import DELIVER_CALLBACK
from embedq.tasks.runtime import Runtime

log = logging.getLogger(__name__)
MAX_URL = 2048
RETRY_STATUSES = frozenset({408, 425, 429})
"""4xx answers worth another try; other 4xx say the request itself is refused."""


class BadCallbackUrl(BadInput):
    """A callback URL that cannot be used."""


def check_callback_url(url: str) -> str:
    """An absolute http(s) URL with a host; BadCallbackUrl says what is wrong otherwise."""
    if len(url) > MAX_URL:
        raise BadCallbackUrl(f"callback_url is longer than {MAX_URL} characters")
    if not url.isascii() or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise BadCallbackUrl(
            "callback_url must be printable ASCII without spaces (percent-encode the rest)"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise BadCallbackUrl(f"callback_url is not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadCallbackUrl(f"callback_url must be an http(s) URL with a host, not {url!r}")
    return url


def register_callback(rt: Runtime, job_id: str, url: str) -> None:
    """Ask for the job's final JSON to be POSTed to ``url`` once it finishes."""
    check_callback_url(url)
    with transaction(rt.sessions, write=True) as session:
        add_callback(session, job_id, url)


def backoff_s(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: doubling from ``base`` up to ``cap``, half of
    it drawn at random so that many failed callbacks do not all retry at the same moment."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return delay / 2 + (rng or random).uniform(0, delay / 2)


def deliver(rt: Runtime, job_id: str, client: httpx.Client | None = None) -> str:
    """One attempt to POST the job's final JSON to its callback URL; the callback must have
    been claimed. Returns the outcome: ``delivered``, ``retry`` or ``failed``."""
    s = rt.settings
    with rt.sessions() as session:
        callback = session.get(JobCallback, job_id)
        job = session.get(Job, job_id)
        if callback is None or job is None:
            return "failed"
        body = json.dumps(job_view(session, job), ensure_ascii=False).encode()
        url, attempt = callback.url, callback.attempts
    status_code, error, retry = _post(url, body, job_id, attempt, s.callback_timeout_s, client)
    retry_at = None
    if error is not None and retry and attempt < s.callback_attempts:
        wait = backoff_s(attempt, s.callback_backoff_s, s.callback_backoff_max_s)
        retry_at = utcnow() + timedelta(seconds=wait)
    with transaction(rt.sessions, write=True) as session:
        record_attempt(session, job_id, status_code=status_code, error=error, retry_at=retry_at)
    if error is None:
        return "delivered"
    level = logging.INFO if retry_at else logging.WARNING
    log.log(level, "callback of job %s, attempt %d: %s", job_id, attempt, error)
    return "retry" if retry_at else "failed"


def _post(
    url: str, body: bytes, job_id: str, attempt: int, timeout: float, client: httpx.Client | None
) -> tuple[int | None, str | None, bool]:
    """POST once: (status code, error or None, whether another try may succeed)."""
    headers = {
        "content-type": "application/json",
        "user-agent": "embedq",
        "x-embedq-job-id": job_id,
        "x-embedq-attempt": str(attempt),
    }
    try:
        if client is None:
            with httpx.Client(timeout=timeout, follow_redirects=False) as own:
                response = own.post(url, content=body, headers=headers)
        else:
            response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}", True
    code = response.status_code
    if 200 <= code < 300:
        return code, None, False
    retry = code >= 500 or code in RETRY_STATUSES
    return code, f"the callback URL answered {code}", retry


class CallbackWatcher:
    """Polls SQL for due callbacks and hands each claimed one to ``send`` (a Celery task or
    the local pool); a daemon thread, stopped with ``stop``."""

    def __init__(self, rt: Runtime, send: Callable[[str], None] | None = None) -> None:
        self.rt = rt
        self._pool: ThreadPoolExecutor | None = None
        if send is None:
            self._pool = ThreadPoolExecutor(2, thread_name_prefix="embedq-callback")
            send = self._deliver_here
        self.send = send
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="embedq-callbacks", daemon=True)

    def start(self) -> CallbackWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def poll_once(self) -> list[str]:
        """Claim every due callback and send it; returns the job ids sent."""
        s = self.rt.settings
        now = utcnow()
        lease = now + timedelta(seconds=3 * s.callback_timeout_s + 30)
        sent = []
        with self.rt.sessions() as session:
            due = due_callbacks(session, now)
        for seen in due:
            with transaction(self.rt.sessions, write=True) as session:
                if not claim(session, seen, lease):
                    continue
            self.send(seen.job_id)
            sent.append(seen.job_id)
        return sent

    def _run(self) -> None:
        while not self._stop.wait(self.rt.settings.callback_poll_s):
            try:
                self.poll_once()
            except Exception:  # a database hiccup must not end the watcher
                log.exception("callback watcher")

    def _deliver_here(self, job_id: str) -> None:
        assert self._pool is not None
        self._pool.submit(self._guarded, job_id)

    def _guarded(self, job_id: str) -> None:
        try:
            deliver(self.rt, job_id)
        except Exception:
            log.exception("callback of job %s", job_id)


def start_watcher(rt: Runtime) -> CallbackWatcher:
    """The watcher for this process: deliveries on the ``default`` queue with a broker, on a
    local pool without."""
    if rt.settings.broker_url:
        from embedq.tasks import broker

        return CallbackWatcher(rt, lambda job_id: broker.send(DELIVER_CALLBACK, [job_id])).start()
    return CallbackWatcher(rt).start()
