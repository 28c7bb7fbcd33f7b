"""The Gladly REST client: one retrying, paced session and typed calls per endpoint."""

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Optional
from urllib.parse import quote, urlsplit

import requests
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from .errors import (
    GladlyAuthError,
    GladlyBadRequest,
    GladlyDataError,
    GladlyError,
    GladlyHTTPError,
    GladlyMoved,
    GladlyNotFound,
    GladlyPermissionError,
    GladlyUnavailable,
)
from .throttle import RateLimiter

log = logging.getLogger(__name__)

# Gladly's documented caps on list endpoints; `Gladly-Limited-Data` flags a cut list.
CONVERSATIONS_PER_CUSTOMER_CAP = 100
ITEMS_PER_CONVERSATION_CAP = 1000
CUSTOMER_SEARCH_CAP = 50

RETRIABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
STREAM_CHUNK_BYTES = 1 << 16
# How a request or a download can break off on the network; all are retried. A body cut
# short arrives as ChunkedEncodingError, which is not a ConnectionError.
NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


@dataclass
class RequestStats:
    """Counters an asset reports as run metadata.

    `network_errors` counts every request or download that broke off on the network;
    `timeouts` and `resets` say how many of them were read timeouts and connections dropped
    mid-answer (the rest were connections that could not be opened).
    """

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    server_errors: int = 0
    network_errors: int = 0
    timeouts: int = 0
    resets: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "throttled_429": self.throttled,
            "server_errors_5xx": self.server_errors,
            "network_errors": self.network_errors,
            "timeouts": self.timeouts,
            "connection_resets": self.resets,
        }


class CappedList(list):
    """A list response; `limited` is True when Gladly said it was cut at its cap."""

    limited: bool = False


@dataclass(frozen=True)
class ProfileLookup:
    """Result of GET customer-profiles/{id}: the profile, or the id it was merged into."""

    requested_id: str
    profile: Optional[dict]
    merged_into: Optional[str] = None


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter, as Gladly recommends.

    Ten attempts wait about 75 s in all on average, so a burst of 429s from another tool
    sharing the organisation's rate is ridden out; `max_total_wait` caps the worst case.
    """

    max_attempts: int = 10
    base_seconds: float = 1.0
    cap_seconds: float = 30.0
    max_total_wait: float = 180.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.cap_seconds, self.base_seconds * 2**attempt))


class GladlyClient:
    """Talks to one Gladly organisation over HTTP Basic (agent email + API token)."""

    def __init__(
        self,
        base_url: str,
        username: str,
        api_token: str,
        *,
        requests_per_second: float = 8.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        retry: RetryPolicy = RetryPolicy(),
        pool_size: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not username:
            raise ValueError(
                "Gladly username is empty: set GLADLY_USERNAME to the API user's email"
            )
        if not api_token:
            raise ValueError("Gladly API token is empty: set GLADLY_API_TOKEN")
        self.base_url = base_url.rstrip("/")
        self.host = urlsplit(self.base_url).netloc
        self.username = username
        self.stats = RequestStats()
        self._server_date: Optional[datetime] = None
        self._timeout = (connect_timeout, read_timeout)
        self._retry = retry
        self._sleep = sleep
        self._rng = random.Random()
        self._limiter = RateLimiter(requests_per_second, sleep=sleep)
        self._session = requests.Session()
        self._session.auth = (username, api_token)
        self._session.headers.update({"Accept": "application/json"})
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def __repr__(self) -> str:
        return f"GladlyClient(base_url={self.base_url!r}, username={self.username!r})"

    def close(self) -> None:
        self._session.close()

    # Reference data and probes

    def organization(self) -> dict:
        return self._get_json("/api/v1/organization")

    def agents(self) -> list:
        return self._get_json("/api/v1/agents")

    def inboxes(self) -> list:
        return self._get_json("/api/v1/inboxes")

    def topics(self) -> list:
        return self._get_json("/api/v1/topics")

    # Conversations, items and profiles

    def conversation(self, conversation_id: str) -> dict:
        return self._get_json(f"/api/v1/conversations/{_seg(conversation_id)}")

    def conversation_items(self, conversation_id: str) -> CappedList:
        path = f"/api/v1/conversations/{_seg(conversation_id)}/items"
        return self._get_capped(path, ITEMS_PER_CONVERSATION_CAP)

    def conversation_item(self, item_id: str) -> dict:
        return self._get_json(f"/api/v1/conversation-items/{_seg(item_id)}")

    def customer_conversations(self, customer_id: str) -> CappedList:
        """A customer's conversations, oldest first, at most 100 (`limited` says if cut).

        A merged-away id raises GladlyMoved naming the survivor: Gladly documents the 301
        for GET customer-profiles; that this list answers the same is the emulator's
        reading (reference §19 q3), and redirects are not followed either way.
        """
        path = f"/api/v1/customers/{_seg(customer_id)}/conversations"
        response = self._send(path, expect=(200, 301))
        if response.status_code == 301:
            new_id = _merge_target(response, path)
            raise GladlyMoved(
                f"{path}: customer {customer_id} was merged into {new_id}",
                path=path, new_id=new_id,
            )
        return self._capped(response, path, CONVERSATIONS_PER_CUSTOMER_CAP)

    def customer_profile(self, customer_id: str) -> ProfileLookup:
        """Fetches a profile without following redirects, so a merge is seen, not hidden."""
        path = f"/api/v1/customer-profiles/{_seg(customer_id)}"
        response = self._send(path, expect=(200, 301))
        if response.status_code == 200:
            return ProfileLookup(customer_id, _json(response, path))
        return ProfileLookup(customer_id, None, merged_into=_merge_target(response, path))

    def find_customers(
        self, *, email: Optional[str] = None, phone: Optional[str] = None
    ) -> list:
        if (email is None) == (phone is None):
            raise ValueError("find_customers takes exactly one of email= or phone=")
        params = {"email": email} if email is not None else {"phoneNumber": phone}
        return self._get_json("/api/v1/customer-profiles", params=params)

    # Export API

    def export_jobs(
        self,
        *,
        status: Optional[str] = None,
        updated_from: Optional[str] = None,
        updated_to: Optional[str] = None,
    ) -> list:
        """Lists export jobs; the time filters apply to each job's `updatedAt`."""
        params = {"status": status, "startAt": updated_from, "endAt": updated_to}
        params = {k: v for k, v in params.items() if v is not None}
        return self._get_json("/api/v1/export/jobs", params=params)

    def export_job(self, job_id: str) -> dict:
        return self._get_json(f"/api/v1/export/jobs/{_seg(job_id)}")

    def export_file_lines(self, job_id: str, filename: str) -> Iterator[bytes]:
        """Streams an export file line by line; never holds the whole file."""
        path = f"/api/v1/export/jobs/{_seg(job_id)}/files/{_seg(filename)}"
        return self._stream_lines(path)

    # Events API

    def event_lines(
        self, *, start_at: str, entities: Sequence[str], end_at: Optional[str] = None
    ) -> Iterator[bytes]:
        """Streams raw JSONL event lines of [start_at, end_at), at most 24 hours back."""
        params = [("startAt", start_at)]
        if end_at is not None:
            params.append(("endAt", end_at))
        params.extend(("entities", entity) for entity in entities)
        return self._stream_lines("/api/v1/events", params=params)

    def server_time(self) -> datetime:
        """Gladly's clock, from the Date header of its last answer (asks if none yet).

        Windows that Gladly checks against its own clock (events: the last 24 hours) are
        computed from this rather than from the local clock, which may drift.
        """
        if self._server_date is None:
            self.organization()
        return self._server_date

    def _stream_lines(self, path: str, params=None) -> Iterator[bytes]:
        """Yields a streamed body line by line.

        A connection lost mid-body is retried by downloading again and skipping the
        lines already handed out, within the same retry budget as any request. A line the
        break left unfinished is never handed out: only lines ended by a newline are.
        """
        delivered = failures = 0
        waited = 0.0
        while True:
            # Export files may be served through a storage redirect (an open question in
            # Gladly's docs); requests drops the credentials when the host changes.
            response = self._send(path, params=params, stream=True, follow_redirects=True)
            seen = 0
            try:
                for line in response.iter_lines(chunk_size=STREAM_CHUNK_BYTES):
                    seen += 1
                    if seen > delivered:
                        delivered = seen
                        yield line
                return
            except NETWORK_ERRORS as exc:
                failures += 1
                delay = self._after_broken_download(exc, path, seen, failures, waited)
                self._sleep(delay)
                waited += delay
            finally:
                response.close()

    def _after_broken_download(
        self, exc: Exception, path: str, seen: int, failures: int, waited: float
    ) -> float:
        """Counts a download that broke off; the wait before the next, or raises past budget."""
        self._count_network_error(exc)
        delay = self._retry.delay(failures, self._rng)
        if failures >= self._retry.max_attempts or waited + delay > self._retry.max_total_wait:
            raise GladlyUnavailable(
                f"download of {path} from {self.host} broke off {failures} times "
                f"(last after {seen} lines): {type(exc).__name__}"
            ) from None
        self.stats.add(retries=1)
        log.warning(
            "Download of %s broke off after %d lines (%s); retrying (%d/%d)",
            path, seen, type(exc).__name__, failures, self._retry.max_attempts,
        )
        return delay

    # Transport

    def _get_json(self, path: str, params: Optional[dict] = None) -> Any:
        return _json(self._send(path, params=params), path)

    def _get_capped(self, path: str, cap: int) -> CappedList:
        return self._capped(self._send(path), path, cap)

    def _capped(self, response: requests.Response, path: str, cap: int) -> CappedList:
        result = CappedList(_json(response, path))
        flag = response.headers.get("Gladly-Limited-Data", "")
        # The header's value is what counts: Gladly may send it as "false".
        result.limited = flag.strip().lower() == "true"
        if result.limited:
            log.warning("%s returned Gladly's cap of %d entries; the list is incomplete", path, cap)
        return result

    def _send(
        self,
        path: str,
        *,
        params: Optional[dict] = None,
        stream: bool = False,
        expect: tuple = (200,),
        follow_redirects: bool = False,
    ) -> requests.Response:
        """GETs `path`, retrying 429, 5xx and network errors within the retry policy."""
        url = self.base_url + path
        waited = 0.0
        for attempt in range(self._retry.max_attempts):
            self._limiter.acquire()
            self.stats.add(requests=1)
            try:
                response = self._session.get(
                    url,
                    params=params,
                    timeout=self._timeout,
                    stream=stream,
                    allow_redirects=follow_redirects,
                )
            except NETWORK_ERRORS as exc:
                self._count_network_error(exc)
                reason, delay = type(exc).__name__, self._retry.delay(attempt, self._rng)
            else:
                if self._accept(response, path, expect):
                    return response
                reason, delay = f"HTTP {response.status_code}", self._backoff(attempt, response)
                response.close()
            if attempt + 1 == self._retry.max_attempts:
                break
            if waited + delay > self._retry.max_total_wait:
                break
            self.stats.add(retries=1)
            log.info("GET %s: %s; retry %d in %.1fs", path, reason, attempt + 1, delay)
            self._sleep(delay)
            waited += delay
        raise GladlyUnavailable(
            f"GET {path} at {self.host} still failing after {attempt + 1} attempts "
            f"and {waited:.0f}s of backoff (last: {reason})"
        )

    def _accept(self, response: requests.Response, path: str, expect: tuple) -> bool:
        """True for an expected answer; False for a retriable one; raises for the rest."""
        self._note_server_time(response)
        self._ease_off(response)
        if response.status_code in expect:
            return True
        if response.status_code not in RETRIABLE_STATUSES:
            raise self._fatal(response, path)
        self._count_transient(response.status_code)
        return False

    def _count_network_error(self, exc: Exception) -> None:
        kind = _how_broken(exc)
        self.stats.add(network_errors=1, **({kind: 1} if kind else {}))

    def _note_server_time(self, response: requests.Response) -> None:
        stamp = response.headers.get("Date")
        if not stamp:
            return
        # A malformed Date header leaves the last good reading in place.
        with contextlib.suppress(TypeError, ValueError):
            self._server_date = parsedate_to_datetime(stamp).astimezone(UTC)

    def _count_transient(self, status: int) -> None:
        if status == 429:
            self.stats.add(throttled=1)
        else:
            self.stats.add(server_errors=1)

    def _backoff(self, attempt: int, response: requests.Response) -> float:
        delay = self._retry.delay(attempt, self._rng)
        retry_after = response.headers.get("Retry-After", "")
        # Gladly documents no Retry-After; honour it only if it ever appears.
        if retry_after.strip().isdigit():
            delay = min(max(delay, float(retry_after)), self._retry.cap_seconds)
        return delay

    def _ease_off(self, response: requests.Response) -> None:
        remaining = response.headers.get("Ratelimit-Remaining-Second", "")
        if remaining.strip() == "0":
            # The organisation's second is used up (other tools share it): wait it out.
            self._limiter.pause(1.0)

    def _fatal(self, response: requests.Response, path: str) -> GladlyHTTPError:
        status = response.status_code
        code, detail = _error_detail(response)
        response.close()
        who = f"user {self.username!r} at {self.host}"
        if status == 401:
            return GladlyAuthError(
                f"Gladly refused the credentials of {who} (401 on {path}): check that "
                "GLADLY_USERNAME is the API user's email and GLADLY_API_TOKEN a current token",
                status=status, path=path, code=code,
            )
        if status == 403:
            return GladlyPermissionError(
                f"Gladly {who} may not read {path} (403): give the user the "
                "'API User' permission in Gladly",
                status=status, path=path, code=code,
            )
        if status == 404:
            return GladlyNotFound(
                f"{path} not found at {self.host} (404{': ' + detail if detail else ''}); "
                "if every call fails this way, check the subdomain or base URL",
                status=status, path=path, code=code,
            )
        if status == 400:
            return GladlyBadRequest(
                f"Gladly rejected GET {path} (400 {code or ''}): {detail or 'no detail'}",
                status=status, path=path, code=code,
            )
        return GladlyHTTPError(
            f"GET {path} at {self.host} failed with HTTP {status}"
            f"{': ' + detail if detail else ''}",
            status=status, path=path, code=code,
        )


def _how_broken(exc: Exception) -> Optional[str]:
    """The RequestStats counter for a network error: "timeouts", "resets" or None.

    requests wraps urllib3's errors: a read timeout mid-body comes as a ConnectionError
    around ReadTimeoutError, a connection dropped before the answer as one around
    ProtocolError, and one dropped mid-body as ChunkedEncodingError.
    """
    cause = exc.args[0] if exc.args else None
    if isinstance(exc, requests.Timeout) or isinstance(cause, ReadTimeoutError):
        return "timeouts"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "resets"
    if isinstance(cause, ProtocolError):
        return "resets"
    return None


def _seg(value: str) -> str:
    """Quotes one path segment; Gladly ids are URL-safe but client ids may not be."""
    return quote(value, safe="-_.~")


def _json(response: requests.Response, path: str) -> Any:
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "unknown")
        raise GladlyDataError(
            f"GET {path} answered {response.status_code} with a body that is not JSON ({kind})"
        ) from None


def _error_detail(response: requests.Response) -> tuple:
    """Reads Gladly's `{"errors": [...]}` body; tolerates the single-object variant."""
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        return None, None
    if isinstance(errors, dict):
        errors = [errors]
    if not errors or not isinstance(errors[0], dict):
        return None, None
    first = errors[0]
    return first.get("code"), first.get("detail")


def _merge_target(response: requests.Response, path: str) -> str:
    try:
        body = response.json()
        errors = body.get("errors")
        if isinstance(errors, dict):
            errors = [errors]
        new_id = errors[0]["meta"]["new"]
        if new_id:
            return new_id
    except (ValueError, AttributeError, KeyError, IndexError, TypeError):
        pass
    location = response.headers.get("Location", "")
    if location:
        return location.rstrip("/").rsplit("/", 1)[-1]
    raise GladlyError(f"GET {path} answered 301 without meta.new or Location")
