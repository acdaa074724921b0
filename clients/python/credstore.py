"""A client for ``credstore serve``, the credstore HTTP sidecar.

One module, the standard library only (Python 3.9 or later), typed throughout::

    from credstore import Client, CredstoreError

    client = Client("http://127.0.0.1:8080", admin_key=os.environ["CREDSTORE_ADMIN_KEY"])
    decision = client.verify(presented_key, cost=1)
    if not decision.valid:
        return reject(decision.status, decision.code, decision.retry_after)

    created = client.create_key("acme backend", project="acme", rate_limits=["100/1m"])
    send_once_to_the_customer(created.key)        # shown this once, never again

- ``verify`` needs no admin key: it asks about the key it is given. It answers a
  :class:`Decision` for valid and denied keys alike (the denial is ``decision.code``);
  only a request the sidecar cannot read, or a sidecar that cannot verify (a stale fleet
  host), raises.
- Every management call needs an admin key of the store (``credstore init`` prints the
  first one). A call the sidecar refuses raises a :class:`CredstoreError` (a subclass of
  it by HTTP status) carrying the envelope's ``code``, the HTTP ``status`` and the
  ``message``.
- Secrets stay out of sight: no exception message holds a key or a provider secret, and
  the ``repr`` of a client, of a new key and of a secret's value leaves them out.

The routes and documents are those of ``credstore serve`` (``GET /openapi.json`` on a
running sidecar describes them). A decision, a key and a new key keep the whole document
they were read from in ``raw``, fields the sidecar adds later included.
"""

from __future__ import annotations

import enum
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "UNSET",
    "AuthError",
    "BadRequestError",
    "Budget",
    "BudgetState",
    "Client",
    "ConflictError",
    "CreatedKey",
    "Credit",
    "CredstoreConnectionError",
    "CredstoreError",
    "Decision",
    "Event",
    "EventPage",
    "ForbiddenError",
    "KeyInfo",
    "KeyPage",
    "MasterKeyRotation",
    "NotFoundError",
    "Plan",
    "RateLimit",
    "RateLimitState",
    "Role",
    "SecretValue",
    "SecretVersion",
    "ServerError",
    "StoredSecret",
    "UnauthorizedError",
    "User",
]

__version__ = "0.1.0"

JSON = dict[str, Any]
"""A JSON object as :func:`json.loads` gives it."""


# ---------------------------------------------------------------------------------------
# Errors


class CredstoreError(Exception):
    """The sidecar refused a call: ``{"success": false, "error": {"code", "message"}}``.

    ``code`` is the envelope's code (``UNAUTHORIZED``, ``ADMIN_REQUIRED``,
    ``INSUFFICIENT_PERMISSIONS``, ``BAD_REQUEST``, ``INVALID_INPUT``, ``NOT_FOUND``,
    ``CONFLICT``, ``NO_MASTER_KEY``, ...), ``status`` the HTTP status (``None`` when no
    answer came at all), ``message`` the sidecar's words for people. None of them holds a
    key or a secret.
    """

    code: str
    status: int | None
    message: str

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(code, message, status)
        self.code = code
        self.message = message
        self.status = status

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "no answer"
        return f"{self.code} ({where}): {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, message={self.message!r})"


class BadRequestError(CredstoreError):
    """400: a request the sidecar cannot read (``BAD_REQUEST``) or input the store refused
    (``INVALID_INPUT``); nothing was written."""


class AuthError(CredstoreError):
    """401 or 403: the admin key is missing, does not verify, or may not do this."""


class UnauthorizedError(AuthError):
    """401 ``UNAUTHORIZED``: no key, or a key that does not verify (unknown, revoked,
    disabled, expired)."""


class ForbiddenError(AuthError):
    """403: a valid key that is not an admin key (``ADMIN_REQUIRED``), or an admin key
    without a permission of its own that the call needs (``INSUFFICIENT_PERMISSIONS``)."""


class NotFoundError(CredstoreError):
    """404 ``NOT_FOUND``: no such key, plan, role, user, secret, or route."""


class ConflictError(CredstoreError):
    """409 ``CONFLICT``: the call does not fit the current state (a key already revoked, a
    plan keys still follow, a built-in role)."""


class ServerError(CredstoreError):
    """5xx: the sidecar could not do it, or something between us and it failed.

    503 ``STALE`` (a fleet host past its staleness bound) and 503 ``NOT_COMMITTED`` (the
    fleet did not take a change) are worth retrying, on another host if there is one;
    503 ``NO_MASTER_KEY`` is the sidecar's configuration; 500 ``STORE_ERROR`` is not
    retried blindly."""


class CredstoreConnectionError(CredstoreError):
    """No answer: the sidecar could not be reached, or the connection failed or timed out
    (``code`` is ``CONNECTION_ERROR``, ``status`` is ``None``)."""


def _error_class(status: int) -> type[CredstoreError]:
    if status == 400:
        return BadRequestError
    if status == 401:
        return UnauthorizedError
    if status == 403:
        return ForbiddenError
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status >= 500:
        return ServerError
    return CredstoreError


# ---------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class RateLimitState:
    """A rate limit as a decision saw it."""

    name: str
    limit: int
    window_ms: int
    remaining: int
    reset: str
    """When the limit is whole again, RFC 3339."""
    retry_after: int | None
    """Seconds until this limit admits the request again, when it refused it."""
    over_capacity: bool
    """The request's weight is over the limit's capacity: it can never pass."""

    @classmethod
    def from_json(cls, doc: JSON) -> RateLimitState:
        return cls(
            name=str(doc.get("name", "")),
            limit=int(doc.get("limit", 0)),
            window_ms=int(doc.get("window_ms", 0)),
            remaining=int(doc.get("remaining", 0)),
            reset=str(doc.get("reset", "")),
            retry_after=_opt_int(doc.get("retry_after")),
            over_capacity=bool(doc.get("over_capacity", False)),
        )


@dataclass(frozen=True)
class BudgetState:
    """A budget as a decision saw it."""

    cap: int
    spent: int
    remaining: int
    period_end: str | None
    """When the period ends and the spend starts over, RFC 3339 (none for ``total``)."""
    charged: bool
    """This decision charged its cost."""

    @classmethod
    def from_json(cls, doc: JSON) -> BudgetState:
        return cls(
            cap=int(doc.get("cap", 0)),
            spent=int(doc.get("spent", 0)),
            remaining=int(doc.get("remaining", 0)),
            period_end=_opt_str(doc.get("period_end")),
            charged=bool(doc.get("charged", False)),
        )


@dataclass(frozen=True)
class Decision:
    """The answer to ``verify``: may this key make this request?

    ``code`` is ``VALID``, ``MALFORMED``, ``NOT_FOUND``, ``REVOKED``, ``DISABLED``,
    ``EXPIRED``, ``FORBIDDEN``, ``INSUFFICIENT_PERMISSIONS``, ``RATE_LIMITED`` or
    ``BUDGET_EXHAUSTED``; ``status`` the HTTP status to answer the caller with (200, 401,
    402, 403, 429).
    """

    valid: bool
    code: str
    status: int
    reason: str | None
    key_id: str | None
    name: str | None
    project: str | None
    env: str | None
    metadata: dict[str, str]
    role: str | None
    forbidden: str | None
    """Which allowlist refused the request (``FORBIDDEN``)."""
    ratelimits: list[RateLimitState]
    budget: BudgetState | None
    rate_limited: str | None
    retry_after: int | None
    """Seconds until a refused request may pass (``RATE_LIMITED``)."""
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, doc: JSON) -> Decision:
        budget = doc.get("budget")
        return cls(
            valid=bool(doc.get("valid", False)),
            code=str(doc.get("code", "")),
            status=int(doc.get("status", 0)),
            reason=_opt_str(doc.get("reason")),
            key_id=_opt_str(doc.get("key_id")),
            name=_opt_str(doc.get("name")),
            project=_opt_str(doc.get("project")),
            env=_opt_str(doc.get("env")),
            metadata=_str_map(doc.get("metadata")),
            role=_opt_str(doc.get("role")),
            forbidden=_opt_str(doc.get("forbidden")),
            ratelimits=[RateLimitState.from_json(r) for r in _objects(doc.get("ratelimits"))],
            budget=BudgetState.from_json(budget) if isinstance(budget, dict) else None,
            rate_limited=_opt_str(doc.get("rate_limited")),
            retry_after=_opt_int(doc.get("retry_after")),
            raw=doc,
        )


@dataclass(frozen=True)
class RateLimit:
    """A rate limit as set on a key or a plan: ``limit`` requests per ``window_ms``."""

    name: str
    limit: int
    window_ms: int

    @classmethod
    def from_json(cls, doc: JSON) -> RateLimit:
        return cls(
            name=str(doc.get("name", "")),
            limit=int(doc.get("limit", 0)),
            window_ms=int(doc.get("window_ms", 0)),
        )


@dataclass(frozen=True)
class Budget:
    """A budget as set on a key or a plan: ``cap`` per ``period``."""

    cap: int
    period: str
    """``monthly``, ``daily`` or ``total``."""
    anchor_day: int | None
    """The day of the month a monthly period starts on."""

    @classmethod
    def from_json(cls, doc: JSON) -> Budget:
        return cls(
            cap=int(doc.get("cap", 0)),
            period=str(doc.get("period", "")),
            anchor_day=_opt_int(doc.get("anchor_day")),
        )


@dataclass(frozen=True)
class KeyInfo:
    """A key's settings and state (``credstore show --json``); never the key itself."""

    id: str
    name: str
    start: str
    """The key's first characters, to recognise it by."""
    env: str
    project: str
    status: str
    """``active``, ``disabled``, ``expired`` or ``revoked``."""
    created_at: str
    last_used_at: str | None
    expires_at: str | None
    metadata: dict[str, str]
    revoked_at: str | None
    revoke_reason: str | None
    rotated_from: str | None
    rotated_to: str | None
    rate_limits: list[RateLimit]
    budget: Budget | None
    plan: str | None
    type: str
    """``service`` or ``personal``."""
    user: str | None
    role: str | None
    permissions: list[str]
    allow_ips: list[str]
    allow_referrers: list[str]
    allow_endpoints: list[str]
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, doc: JSON) -> KeyInfo:
        budget = doc.get("budget")
        return cls(
            id=str(doc.get("id", "")),
            name=str(doc.get("name", "")),
            start=str(doc.get("start", "")),
            env=str(doc.get("env", "")),
            project=str(doc.get("project", "")),
            status=str(doc.get("status", "")),
            created_at=str(doc.get("created_at", "")),
            last_used_at=_opt_str(doc.get("last_used_at")),
            expires_at=_opt_str(doc.get("expires_at")),
            metadata=_str_map(doc.get("metadata")),
            revoked_at=_opt_str(doc.get("revoked_at")),
            revoke_reason=_opt_str(doc.get("revoke_reason")),
            rotated_from=_opt_str(doc.get("rotated_from")),
            rotated_to=_opt_str(doc.get("rotated_to")),
            rate_limits=[RateLimit.from_json(r) for r in _objects(doc.get("rate_limits"))],
            budget=Budget.from_json(budget) if isinstance(budget, dict) else None,
            plan=_opt_str(doc.get("plan")),
            type=str(doc.get("type", "")),
            user=_opt_str(doc.get("user")),
            role=_opt_str(doc.get("role")),
            permissions=_strs(doc.get("permissions")),
            allow_ips=_strs(doc.get("allow_ips")),
            allow_referrers=_strs(doc.get("allow_referrers")),
            allow_endpoints=_strs(doc.get("allow_endpoints")),
            raw=doc,
        )


@dataclass(frozen=True)
class CreatedKey:
    """A new key (``create``, ``rotate``). ``key`` is shown in this answer only: hand it to
    its holder and drop it. It is left out of ``repr``."""

    id: str
    key: str = field(repr=False)
    name: str
    start: str
    env: str
    project: str
    created_at: str
    expires_at: str | None
    metadata: dict[str, str]
    replaces: str | None
    """For a rotation: the old key's id."""
    old_revoked_at: str | None
    """For a rotation: when the old key stops working."""
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, doc: JSON) -> CreatedKey:
        return cls(
            id=str(doc.get("id", "")),
            key=str(doc.get("key", "")),
            name=str(doc.get("name", "")),
            start=str(doc.get("start", "")),
            env=str(doc.get("env", "")),
            project=str(doc.get("project", "")),
            created_at=str(doc.get("created_at", "")),
            expires_at=_opt_str(doc.get("expires_at")),
            metadata=_str_map(doc.get("metadata")),
            replaces=_opt_str(doc.get("replaces")),
            old_revoked_at=_opt_str(doc.get("old_revoked_at")),
            raw=doc,
        )


@dataclass(frozen=True)
class KeyPage:
    """One page of ``list_keys``: pass ``next_cursor`` as ``after`` for the next one; it is
    ``None`` on the last page."""

    keys: list[KeyInfo]
    next_cursor: str | None


@dataclass(frozen=True)
class Plan:
    """A plan: rate limits and a budget that the keys on it follow."""

    name: str
    rate_limits: list[RateLimit]
    budget: Budget | None

    @classmethod
    def from_json(cls, doc: JSON) -> Plan:
        budget = doc.get("budget")
        return cls(
            name=str(doc.get("name", "")),
            rate_limits=[RateLimit.from_json(r) for r in _objects(doc.get("rate_limits"))],
            budget=Budget.from_json(budget) if isinstance(budget, dict) else None,
        )


@dataclass(frozen=True)
class Role:
    """A role: the permissions it grants."""

    name: str
    permissions: list[str]

    @classmethod
    def from_json(cls, doc: JSON) -> Role:
        return cls(name=str(doc.get("name", "")), permissions=_strs(doc.get("permissions")))


@dataclass(frozen=True)
class User:
    """A user: project → the user's role there."""

    id: str
    memberships: dict[str, str]

    @classmethod
    def from_json(cls, doc: JSON) -> User:
        return cls(id=str(doc.get("id", "")), memberships=_str_map(doc.get("memberships")))


@dataclass(frozen=True)
class SecretVersion:
    """A stored version of a provider secret, as the vault lists it: never its value."""

    project: str
    name: str
    version: int
    created_at: str
    master_version: int

    @classmethod
    def from_json(cls, doc: JSON) -> SecretVersion:
        return cls(
            project=str(doc.get("project", "")),
            name=str(doc.get("name", "")),
            version=int(doc.get("version", 0)),
            created_at=str(doc.get("created_at", "")),
            master_version=int(doc.get("master_version", 0)),
        )


@dataclass(frozen=True)
class StoredSecret:
    """The version a ``vault_put`` stored."""

    project: str
    name: str
    version: int
    master_version: int

    @classmethod
    def from_json(cls, doc: JSON) -> StoredSecret:
        return cls(
            project=str(doc.get("project", "")),
            name=str(doc.get("name", "")),
            version=int(doc.get("version", 0)),
            master_version=int(doc.get("master_version", 0)),
        )


@dataclass(frozen=True)
class SecretValue:
    """A provider secret's value (``vault_get``). ``secret`` is left out of ``repr``."""

    project: str
    name: str
    version: int
    secret: str = field(repr=False)

    @classmethod
    def from_json(cls, doc: JSON) -> SecretValue:
        return cls(
            project=str(doc.get("project", "")),
            name=str(doc.get("name", "")),
            version=int(doc.get("version", 0)),
            secret=str(doc.get("secret", "")),
        )


@dataclass(frozen=True)
class MasterKeyRotation:
    """What ``vault_rotate_master`` did. A generated ``master_key`` (``VERSION:HEX``) is
    shown this once and left out of ``repr``: add it to ``CREDSTORE_MASTER_KEY`` before the
    sidecar next starts."""

    master_version: int
    rewrapped: int
    retired_below: int | None
    master_key: str | None = field(repr=False)

    @classmethod
    def from_json(cls, doc: JSON) -> MasterKeyRotation:
        return cls(
            master_version=int(doc.get("master_version", 0)),
            rewrapped=int(doc.get("rewrapped", 0)),
            retired_below=_opt_int(doc.get("retired_below")),
            master_key=_opt_str(doc.get("master_key")),
        )


@dataclass(frozen=True)
class Event:
    """An event of the log (``audit``, ``events``). A record of uses gives one ``key.used``
    event per use, all with the record's ``seq``."""

    seq: int
    at: str
    kind: str
    """``key.created``, ``key.revoked``, ``key.used``, ``plan.set``, ``vault.read``, ..."""
    details: JSON

    @classmethod
    def from_json(cls, doc: JSON) -> Event:
        details = doc.get("details")
        return cls(
            seq=int(doc.get("seq", 0)),
            at=str(doc.get("at", "")),
            kind=str(doc.get("kind", "")),
            details=details if isinstance(details, dict) else {},
        )


@dataclass(frozen=True)
class EventPage:
    """Part of the change feed (``events``): pass ``next_cursor`` as ``after`` to read on
    (it is the last record read, or ``after`` again when nothing came)."""

    events: list[Event]
    next_cursor: int


@dataclass(frozen=True)
class Credit:
    """A key's budget credit this period, after ``credits_add`` or ``credits_set``."""

    key_id: str
    credit: int
    """What was added to the cap this period (negative: taken from it)."""
    cap: int
    """The cap in force this period."""
    remaining: int
    """What is left to spend this period."""

    @classmethod
    def from_json(cls, doc: JSON) -> Credit:
        return cls(
            key_id=str(doc.get("key_id", "")),
            credit=int(doc.get("credit", 0)),
            cap=int(doc.get("cap", 0)),
            remaining=int(doc.get("remaining", 0)),
        )


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset.UNSET
"""For ``update_key``: leave this setting as it is (the default). ``None`` removes it."""


# ---------------------------------------------------------------------------------------
# The client


class Client:
    """A client of one ``credstore serve`` at ``base_url`` (``http://127.0.0.1:8080``).

    ``admin_key`` is needed for the management calls only, sent as ``Authorization:
    Bearer``; ``verify`` never sends it. ``timeout`` bounds each request, in seconds.
    A client holds no connection between calls and may be shared by threads. It ignores
    the environment's proxy settings (``http_proxy``, ...): the sidecar sits beside its
    host, and the admin key is not for a proxy to see.
    """

    def __init__(self, base_url: str, admin_key: str | None = None, timeout: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._admin_key = admin_key
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:
        admin = "set" if self._admin_key else "none"
        return f"Client({self.base_url!r}, admin_key=<{admin}>, timeout={self.timeout!r})"

    # -- verify -----------------------------------------------------------------------

    def verify(
        self,
        key: str,
        cost: int = 1,
        *,
        weight: int | None = None,
        ip: str | None = None,
        endpoint: str | None = None,
        referrer: str | None = None,
        require: str | None = None,
        project: str | None = None,
        env: str | None = None,
    ) -> Decision:
        """May ``key`` make this request? ``POST /v1/keys.verify``.

        ``cost`` is charged to the key's budget (0 only checks), ``weight`` to its rate
        limits (default 1); ``ip``, ``endpoint`` (``"METHOD PATH"``) and ``referrer`` are
        checked against its allowlists, ``require`` (``"docs:read AND users:view"``)
        against its permissions, ``project`` and ``env`` against its own. A denied key is
        a :class:`Decision` too, with ``valid`` false. A request the sidecar cannot read
        raises :class:`BadRequestError`; a fleet host past its staleness bound raises
        :class:`ServerError` with code ``STALE`` (ask another host, or refuse: fail
        closed).
        """
        body: JSON = {"key": key, "cost": cost}
        _put(body, "weight", weight)
        _put(body, "ip", ip)
        _put(body, "endpoint", endpoint)
        _put(body, "referrer", referrer)
        _put(body, "require", require)
        _put(body, "project", project)
        _put(body, "env", env)
        return Decision.from_json(self._object("POST", "/v1/keys.verify", body=body, admin=False))

    # -- keys -------------------------------------------------------------------------

    def create_key(
        self,
        name: str,
        *,
        prefix: str | None = None,
        env: str | None = None,
        length: int | None = None,
        total_length: int | None = None,
        checksum: bool | None = None,
        new_format: bool | None = None,
        project: str | None = None,
        expires_in: str | None = None,
        expires_at: str | None = None,
        metadata: Mapping[str, str] | None = None,
        rate_limits: Sequence[str] | None = None,
        budget: int | None = None,
        budget_period: str | None = None,
        plan: str | None = None,
        key_type: str | None = None,
        user: str | None = None,
        role: str | None = None,
        permissions: Sequence[str] | None = None,
        allow_ips: Sequence[str] | None = None,
        allow_referrers: Sequence[str] | None = None,
        allow_endpoints: Sequence[str] | None = None,
    ) -> CreatedKey:
        """Issues a key, as ``credstore create`` does. ``POST /v1/api-keys``.

        ``rate_limits`` as ``--rate-limit`` takes them (``"100/1m"``, ``"10/1s:burst"``),
        ``expires_in`` as ``90d``/``12h``/``30m``/``45s``, ``budget_period`` ``monthly``
        (default), ``daily`` or ``total``, ``key_type`` ``service`` (default) or
        ``personal`` (with ``user``). The answer holds the key itself, this once.
        """
        body: JSON = {"name": name}
        _put(body, "prefix", prefix)
        _put(body, "env", env)
        _put(body, "length", length)
        _put(body, "total_length", total_length)
        _put(body, "checksum", checksum)
        _put(body, "new_format", new_format)
        _put(body, "project", project)
        _put(body, "expires_in", expires_in)
        _put(body, "expires_at", expires_at)
        _put(body, "metadata", _map(metadata))
        _put(body, "rate_limits", _list(rate_limits))
        _put(body, "budget", budget)
        _put(body, "budget_period", budget_period)
        _put(body, "plan", plan)
        _put(body, "type", key_type)
        _put(body, "user", user)
        _put(body, "role", role)
        _put(body, "permissions", _list(permissions))
        _put(body, "allow_ips", _list(allow_ips))
        _put(body, "allow_referrers", _list(allow_referrers))
        _put(body, "allow_endpoints", _list(allow_endpoints))
        return CreatedKey.from_json(self._object("POST", "/v1/api-keys", body=body))

    def list_keys(
        self,
        *,
        project: str | None = None,
        prefix: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> KeyPage:
        """One page of keys, oldest first, as ``credstore list`` filters them (``status``
        ``active``, ``disabled``, ``expired`` or ``revoked``). ``GET /v1/api-keys``.

        ``limit`` keys per page (the sidecar's default is 100, its most 1000); ``after``
        is the ``next_cursor`` of the page before. :meth:`iter_keys` walks every page.
        """
        query = _query(project=project, prefix=prefix, status=status, limit=limit, after=after)
        answer = self._call("GET", "/v1/api-keys", query=query)
        keys = [KeyInfo.from_json(k) for k in _objects(answer.get("data"))]
        return KeyPage(keys=keys, next_cursor=_opt_str(answer.get("next_cursor")))

    def iter_keys(
        self,
        *,
        project: str | None = None,
        prefix: str | None = None,
        status: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[KeyInfo]:
        """Every key that matches, oldest first, a page at a time (``page_size`` each)."""
        after: str | None = None
        while True:
            page = self.list_keys(project=project, prefix=prefix, status=status, limit=page_size, after=after)
            yield from page.keys
            if page.next_cursor is None:
                return
            after = page.next_cursor

    def get_key(self, key_id: str) -> KeyInfo:
        """One key, by id (``credstore show``). ``GET /v1/api-keys/{id}``."""
        return KeyInfo.from_json(self._object("GET", f"/v1/api-keys/{_seg(key_id)}"))

    def update_key(
        self,
        key_id: str,
        *,
        name: str | None = None,
        metadata: Mapping[str, str] | None = None,
        expires_in: str | None = None,
        expires_at: str | None | _Unset = UNSET,
        rate_limits: Sequence[str] | None = None,
        budget: int | None | _Unset = UNSET,
        budget_period: str | None = None,
        plan: str | None | _Unset = UNSET,
        role: str | None = None,
        permissions: Sequence[str] | None = None,
        allow_ips: Sequence[str] | None = None,
        allow_referrers: Sequence[str] | None = None,
        allow_endpoints: Sequence[str] | None = None,
    ) -> KeyInfo:
        """Changes a key's settings (``credstore update``); what is not given stays.
        ``PATCH /v1/api-keys/{id}``.

        A list or ``metadata`` given replaces the key's (an empty one clears it);
        ``expires_at``, ``budget`` and ``plan`` are removed with ``None`` and left alone
        with :data:`UNSET`. Giving nothing at all is a :class:`BadRequestError`.
        """
        body: JSON = {}
        _put(body, "name", name)
        _put(body, "metadata", _map(metadata))
        _put(body, "expires_in", expires_in)
        if expires_at is not UNSET:
            body["expires_at"] = expires_at
        _put(body, "rate_limits", _list(rate_limits))
        if budget is not UNSET:
            body["budget"] = budget
        _put(body, "budget_period", budget_period)
        if plan is not UNSET:
            body["plan"] = plan
        _put(body, "role", role)
        _put(body, "permissions", _list(permissions))
        _put(body, "allow_ips", _list(allow_ips))
        _put(body, "allow_referrers", _list(allow_referrers))
        _put(body, "allow_endpoints", _list(allow_endpoints))
        return KeyInfo.from_json(self._object("PATCH", f"/v1/api-keys/{_seg(key_id)}", body=body))

    def disable_key(self, key_id: str) -> KeyInfo:
        """Disables a key, reversibly. ``POST /v1/api-keys/{id}/disable``."""
        return KeyInfo.from_json(self._object("POST", f"/v1/api-keys/{_seg(key_id)}/disable"))

    def enable_key(self, key_id: str) -> KeyInfo:
        """Enables a disabled key. ``POST /v1/api-keys/{id}/enable``."""
        return KeyInfo.from_json(self._object("POST", f"/v1/api-keys/{_seg(key_id)}/enable"))

    def revoke_key(self, key_id: str, reason: str | None = None) -> KeyInfo:
        """Revokes a key, at once and for good. ``DELETE /v1/api-keys/{id}``."""
        body: JSON | None = {"reason": reason} if reason is not None else None
        return KeyInfo.from_json(self._object("DELETE", f"/v1/api-keys/{_seg(key_id)}", body=body))

    def revoke_key_by_value(self, key: str, reason: str | None = None) -> KeyInfo:
        """Revokes a leaked key found by its value, for a key seen in a repository or a log
        whose id nobody has at hand (``credstore revoke --key -``).
        ``POST /v1/api-keys/revoke-by-key``; a key that is not one of the store's raises
        :class:`NotFoundError`."""
        body: JSON = {"key": key}
        _put(body, "reason", reason)
        return KeyInfo.from_json(self._object("POST", "/v1/api-keys/revoke-by-key", body=body))

    def rotate_key(self, key_id: str, grace: str | None = None) -> CreatedKey:
        """Issues a new key with the same settings; the old one stops now, or after
        ``grace`` (``"24h"``). ``POST /v1/api-keys/{id}/rotate``."""
        body: JSON | None = {"grace": grace} if grace is not None else None
        return CreatedKey.from_json(self._object("POST", f"/v1/api-keys/{_seg(key_id)}/rotate", body=body))

    def credits_add(self, key_id: str, amount: int, reason: str | None = None) -> Credit:
        """Adds ``amount`` to what the key's budget has left this period (negative: takes
        it away, never below nothing), logged with ``reason`` (``credstore credits add``).
        ``POST /v1/api-keys/{id}/credits``; a key without a budget raises
        :class:`ConflictError`."""
        body: JSON = {"add": amount}
        _put(body, "reason", reason)
        return Credit.from_json(self._object("POST", f"/v1/api-keys/{_seg(key_id)}/credits", body=body))

    def credits_set(self, key_id: str, remaining: int, reason: str | None = None) -> Credit:
        """Makes what the key's budget has left this period exactly ``remaining``
        (``credstore credits set``). ``POST /v1/api-keys/{id}/credits``."""
        body: JSON = {"set": remaining}
        _put(body, "reason", reason)
        return Credit.from_json(self._object("POST", f"/v1/api-keys/{_seg(key_id)}/credits", body=body))

    # -- plans, roles, users ----------------------------------------------------------

    def list_plans(self) -> list[Plan]:
        """Every plan. ``GET /v1/plans``."""
        return [Plan.from_json(p) for p in self._list("GET", "/v1/plans")]

    def set_plan(
        self,
        name: str,
        *,
        rate_limits: Sequence[str] = (),
        budget: int | None = None,
        budget_period: str | None = None,
    ) -> Plan:
        """Creates or replaces a plan; keys on it follow it at once. ``PUT /v1/plans/{name}``."""
        body: JSON = {"rate_limits": list(rate_limits)}
        _put(body, "budget", budget)
        _put(body, "budget_period", budget_period)
        return Plan.from_json(self._object("PUT", f"/v1/plans/{_seg(name)}", body=body))

    def delete_plan(self, name: str) -> None:
        """Deletes a plan no key follows. ``DELETE /v1/plans/{name}``."""
        self._call("DELETE", f"/v1/plans/{_seg(name)}")

    def list_roles(self) -> list[Role]:
        """Every role, built-in and the store's own. ``GET /v1/roles``."""
        return [Role.from_json(r) for r in self._list("GET", "/v1/roles")]

    def set_role(self, name: str, permissions: Sequence[str]) -> Role:
        """Creates or replaces a role (``resource:action`` permissions).
        ``PUT /v1/roles/{name}``."""
        body: JSON = {"permissions": list(permissions)}
        return Role.from_json(self._object("PUT", f"/v1/roles/{_seg(name)}", body=body))

    def delete_role(self, name: str) -> None:
        """Deletes a role no key and no user has. ``DELETE /v1/roles/{name}``."""
        self._call("DELETE", f"/v1/roles/{_seg(name)}")

    def list_users(self) -> list[User]:
        """Every user. ``GET /v1/users``."""
        return [User.from_json(u) for u in self._list("GET", "/v1/users")]

    def set_user(self, user_id: str, memberships: Mapping[str, str]) -> User:
        """Creates or replaces a user with ``memberships`` (project → role).
        ``PUT /v1/users/{id}``."""
        body: JSON = {"memberships": dict(memberships)}
        return User.from_json(self._object("PUT", f"/v1/users/{_seg(user_id)}", body=body))

    def remove_user(self, user_id: str) -> None:
        """Removes a user; their personal tokens are refused from the next request.
        ``DELETE /v1/users/{id}``."""
        self._call("DELETE", f"/v1/users/{_seg(user_id)}")

    # -- vault ------------------------------------------------------------------------

    def vault_put(self, name: str, secret: str, *, project: str | None = None) -> StoredSecret:
        """Stores a new version of a provider secret. ``PUT /v1/vault/secrets/{name}``."""
        return StoredSecret.from_json(
            self._object(
                "PUT", f"/v1/vault/secrets/{_seg(name)}", query=_query(project=project), body={"secret": secret}
            )
        )

    def vault_list(self, project: str | None = None) -> list[SecretVersion]:
        """Every stored secret version (of one project, or of all), never a value.
        ``GET /v1/vault/secrets``."""
        docs = self._list("GET", "/v1/vault/secrets", query=_query(project=project))
        return [SecretVersion.from_json(d) for d in docs]

    def vault_get(self, name: str, *, project: str | None = None, version: int | None = None) -> SecretValue:
        """A secret's value (the latest version unless ``version``): only for an admin key
        holding the permission ``vault:read`` of its own; the read is audited.
        ``GET /v1/vault/secrets/{name}``."""
        query = _query(project=project, version=version)
        return SecretValue.from_json(self._object("GET", f"/v1/vault/secrets/{_seg(name)}", query=query))

    def vault_delete(self, name: str, *, project: str | None = None) -> None:
        """Deletes every version of a secret. ``DELETE /v1/vault/secrets/{name}``."""
        self._call("DELETE", f"/v1/vault/secrets/{_seg(name)}", query=_query(project=project))

    def vault_rotate_master(
        self, *, master_key: str | None = None, generate: bool = False, retire_old: bool = False
    ) -> MasterKeyRotation:
        """Adds a master key version (``master_key``, 64 hex characters, or ``generate``)
        and rewraps every data key under it. ``POST /v1/vault/rotate-master``."""
        body: JSON = {"generate": generate, "retire_old": retire_old}
        _put(body, "master_key", master_key)
        return MasterKeyRotation.from_json(self._object("POST", "/v1/vault/rotate-master", body=body))

    # -- audit and operations ---------------------------------------------------------

    def audit(
        self,
        *,
        key: str | None = None,
        kind: str | None = None,
        since: str | None = None,
        until: str | None = None,
        newest_first: bool | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Events of the audit log: of one key (``key`` is its id), of one ``kind``, at or
        after ``since`` and before ``until`` (RFC 3339, a date, or a duration before now
        such as ``"1h"``), oldest first unless ``newest_first``, at most ``limit``.
        ``GET /v1/audit``."""
        query = _query(key=key, kind=kind, since=since, until=until, newest_first=newest_first, limit=limit)
        return [Event.from_json(e) for e in self._list("GET", "/v1/audit", query=query)]

    def events(self, after: int = 0, *, wait: float | None = None, limit: int | None = None) -> EventPage:
        """The change feed: the events of the records after record ``after``, oldest first
        (``credstore events``). With ``wait`` (seconds, at most 25) and nothing new yet, the
        sidecar holds the request until a record commits or the wait is over (a long
        poll); this request's timeout is the client's plus ``wait``. ``limit`` records at
        most (the sidecar's default 1,000). ``GET /v1/events``."""
        wait_ms = round(wait * 1000) if wait is not None else 0
        query = _query(after=after, wait=f"{wait_ms}ms" if wait_ms > 0 else None, limit=limit)
        answer = self._call("GET", "/v1/events", query=query, timeout=self.timeout + wait_ms / 1000)
        events = [Event.from_json(e) for e in _objects(answer.get("data"))]
        cursor = answer.get("next_cursor")
        return EventPage(events=events, next_cursor=int(cursor) if cursor is not None else after)

    def follow_events(self, after: int = 0, *, wait: float = 25.0) -> Iterator[Event]:
        """Every event after record ``after``, then each one as it commits, for ever: long
        polls of :meth:`events` of ``wait`` seconds each. Stop by leaving the loop."""
        while True:
            page = self.events(after, wait=wait)
            yield from page.events
            after = page.next_cursor

    def healthy(self) -> bool:
        """The sidecar serves HTTP (``GET /healthz``)."""
        return self._probe("/healthz")

    def ready(self) -> bool:
        """The sidecar's store can verify (``GET /readyz``)."""
        return self._probe("/readyz")

    def openapi(self) -> JSON:
        """The sidecar's OpenAPI document (``GET /openapi.json``)."""
        status, doc = self._send("GET", "/openapi.json", None, None, admin=False)
        if status != 200:
            raise _failure(status, doc)
        return doc

    # -- transport --------------------------------------------------------------------

    def _probe(self, path: str) -> bool:
        try:
            self._call("GET", path, admin=False)
        except (ServerError, CredstoreConnectionError):
            return False
        return True

    def _object(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: JSON | None = None,
        admin: bool = True,
    ) -> JSON:
        data = self._call(method, path, query=query, body=body, admin=admin).get("data")
        if not isinstance(data, dict):
            raise CredstoreError("BAD_ANSWER", f"{method} {path}: the answer's data is not a JSON object")
        return data

    def _list(self, method: str, path: str, *, query: Mapping[str, str] | None = None) -> list[JSON]:
        data = self._call(method, path, query=query).get("data")
        if not isinstance(data, list):
            raise CredstoreError("BAD_ANSWER", f"{method} {path}: the answer's data is not a JSON array")
        return [d for d in data if isinstance(d, dict)]

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: JSON | None = None,
        admin: bool = True,
        timeout: float | None = None,
    ) -> JSON:
        """One request; the whole envelope of a success, or the error it holds raised."""
        status, doc = self._send(method, path, query, body, admin=admin, timeout=timeout)
        if 200 <= status < 300 and doc.get("success") is True:
            return doc
        raise _failure(status, doc)

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None,
        body: JSON | None,
        *,
        admin: bool,
        timeout: float | None = None,
    ) -> tuple[int, JSON]:
        """Sends a request and reads its answer as a JSON object (``{}`` when it is not
        one). The request (which may hold a key) appears in no error raised here."""
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json", "User-Agent": f"credstore-python/{__version__}"}
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if admin and self._admin_key is not None:
            headers["Authorization"] = f"Bearer {self._admin_key}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=timeout or self.timeout) as response:
                return int(response.status), _json_object(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return int(error.code), _json_object(error.read())
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            # Only the reason's type and the route: never the request's headers or body.
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            raise CredstoreConnectionError(
                "CONNECTION_ERROR", f"{method} {path}: no answer from {self.base_url} ({type(reason).__name__})"
            ) from None


# ---------------------------------------------------------------------------------------
# Helpers


def _failure(status: int, doc: JSON) -> CredstoreError:
    """The error an answer holds, or one that says the answer was not the envelope."""
    error = doc.get("error")
    cls = _error_class(status)
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return cls(str(error["code"]), str(error.get("message", "")), status)
    if 200 <= status < 300:
        return CredstoreError("BAD_ANSWER", "a success status without a success envelope", status)
    # Not credstore's envelope (a proxy's page, say): its body is not repeated.
    return cls(f"HTTP_{status}", f"HTTP {status} without credstore's error envelope", status)


def _json_object(raw: bytes) -> JSON:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _put(body: JSON, name: str, value: object) -> None:
    """Sets ``name`` in a request body unless ``value`` is ``None`` (left to the sidecar)."""
    if value is not None:
        body[name] = value


def _list(values: Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        raise TypeError("give a list of strings, not one string")
    return list(values)


def _map(values: Mapping[str, str] | None) -> dict[str, str] | None:
    return dict(values) if values is not None else None


def _query(**params: str | int | bool | None) -> dict[str, str]:
    """Query parameters, leaving out those not given; booleans as ``true``/``false``."""
    query: dict[str, str] = {}
    for name, value in params.items():
        if value is None:
            continue
        query[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return query


def _seg(value: str) -> str:
    """A path segment, percent-encoded (a name with ``/`` stays one segment)."""
    return urllib.parse.quote(value, safe="")


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _strs(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _str_map(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _objects(value: object) -> list[JSON]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
