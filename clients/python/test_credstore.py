"""credstore.py against the real ``credstore serve``: every call of the client, its
results and its errors.

The binary comes from ``CREDSTORE_BIN`` (``tests/python_client.rs`` sets it to the one
cargo built). One sidecar serves the whole module, on a store made by ``credstore init``
in a temporary directory; its bootstrap admin key, printed by ``init``, is the client's
admin key. Each test makes keys of its own (in a project of its own where it lists).

Nothing is skipped but the whole module when ``CREDSTORE_BIN`` is not set, and that
only outside CI: under ``CI=true`` it is an error.

Run: ``CREDSTORE_BIN=target/debug/credstore python3 -m unittest -v clients/python/test_credstore.py``
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import unittest
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from credstore import (
    UNSET,
    AuthError,
    BadRequestError,
    Budget,
    Client,
    ConflictError,
    CreatedKey,
    CredstoreConnectionError,
    CredstoreError,
    Decision,
    Event,
    EventPage,
    ForbiddenError,
    NotFoundError,
    RateLimit,
    UnauthorizedError,
)

IN_CI = os.environ.get("CI") == "true"

# How long the sidecar may take to start or to stop: a bound on a hang, not a timing
# assertion.
START_STOP_LIMIT = 60.0


class Sidecar:
    """``credstore init`` on a temporary directory, then ``credstore serve`` on it."""

    def __init__(self, binary: str) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="credstore-py-")
        self.data = os.path.join(self.tmp.name, "data")
        # The caller's CREDSTORE_* settings must not reach the store under test.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CREDSTORE_")}
        init = subprocess.run(
            [binary, "--data", self.data, "init"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_STOP_LIMIT,
            check=False,
        )
        if init.returncode != 0:
            raise RuntimeError(f"credstore init failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        self.admin_key = bootstrap_admin_key(init.stdout)
        self.stderr = open(os.path.join(self.tmp.name, "serve.stderr"), "w+", encoding="utf-8")
        self.process = subprocess.Popen(
            [binary, "--data", self.data, "serve", "--listen", "127.0.0.1:0"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._drain, args=(lines,), daemon=True).start()
        try:
            first = lines.get(timeout=START_STOP_LIMIT)
        except queue.Empty:
            first = ""
        match = re.fullmatch(r"Listening on (http://\S+)", first.strip())
        if match is None:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"credstore serve did not start (first line {first!r}):\n{self.stderr_text()}")
        self.url = match.group(1)

    def _drain(self, lines: queue.Queue[str]) -> None:
        """Hands over the first line of stdout and reads the rest, so the pipe never fills."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            lines.put(line)

    def stderr_text(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()

    def stop(self) -> int:
        """SIGTERM, and its exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=START_STOP_LIMIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stderr.close()
        self.tmp.cleanup()


def bootstrap_admin_key(init_stdout: str) -> str:
    """The admin key ``credstore init`` prints, alone and indented on the line after the
    one that announces it."""
    lines = init_stdout.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Bootstrap admin key"):
            for candidate in lines[i + 1 :]:
                if candidate.strip():
                    return candidate.strip()
    raise RuntimeError(f"credstore init printed no bootstrap admin key:\n{init_stdout}")


SIDECAR: Sidecar | None = None
# Every key and secret the tests handled: none may appear in the sidecar's log.
SECRETS: list[str] = []


def setUpModule() -> None:
    global SIDECAR
    binary = os.environ.get("CREDSTORE_BIN")
    if not binary:
        if IN_CI:
            raise RuntimeError("CREDSTORE_BIN is not set: it names the credstore binary under test")
        raise unittest.SkipTest("CREDSTORE_BIN is not set (run through `cargo test --test python_client`)")
    SIDECAR = Sidecar(binary)
    SECRETS.append(SIDECAR.admin_key)


def tearDownModule() -> None:
    if SIDECAR is None:
        return
    try:
        status = SIDECAR.stop()
        log = SIDECAR.stderr_text()
        if status != 0:
            raise AssertionError(f"credstore serve exited with {status} on SIGTERM:\n{log}")
        leaked = [s[:8] + "..." for s in SECRETS if s in log]
        if leaked:
            raise AssertionError(f"the sidecar's log holds secrets the tests used: {leaked}")
    finally:
        SIDECAR.close()


class Case(unittest.TestCase):
    """A test with an admin client of the module's sidecar."""

    url: str
    admin: Client

    def setUp(self) -> None:
        assert SIDECAR is not None
        self.url = SIDECAR.url
        self.admin = Client(SIDECAR.url, admin_key=SIDECAR.admin_key)

    def create(self, name: str, **settings: Any) -> CreatedKey:
        created = self.admin.create_key(name, **settings)
        SECRETS.append(created.key)
        return created

    def project(self) -> str:
        """A project of this test's own."""
        return "py-" + uuid.uuid4().hex[:12]

    def assertHides(self, error: BaseException, *secrets: str) -> None:
        """Neither the error's text nor its arguments hold any of ``secrets``."""
        shown = " ".join([str(error), repr(error), *map(str, error.args)])
        for secret in secrets:
            self.assertNotIn(secret, shown)

    def assertError(self, error: CredstoreError, cls: type[CredstoreError], code: str, status: int) -> None:
        self.assertIsInstance(error, cls)
        self.assertEqual((error.code, error.status), (code, status), repr(error))
        self.assertTrue(error.message, "an error carries the sidecar's message")


# ---------------------------------------------------------------------------------------
# verify


class VerifyTest(Case):
    def test_a_valid_key_is_decided_with_its_limits_and_budget(self) -> None:
        project = self.project()
        created = self.create("verify me", project=project, metadata={"tier": "gold"}, rate_limits=["5/1h"], budget=10)
        # No admin key: verify asks about the key it is given.
        decision = Client(self.url).verify(created.key, cost=2)
        self.assertTrue(decision.valid)
        self.assertEqual((decision.code, decision.status), ("VALID", 200))
        self.assertEqual(decision.key_id, created.id)
        self.assertEqual((decision.name, decision.project, decision.env), ("verify me", project, "live"))
        self.assertEqual(decision.metadata, {"tier": "gold"})
        self.assertEqual(decision.role, "member")
        self.assertIsNone(decision.retry_after)
        self.assertEqual(len(decision.ratelimits), 1)
        limit = decision.ratelimits[0]
        self.assertEqual((limit.name, limit.limit, limit.window_ms, limit.remaining), ("1h", 5, 3_600_000, 4))
        self.assertFalse(limit.over_capacity)
        self.assertTrue(limit.reset)
        assert decision.budget is not None
        budget = decision.budget
        self.assertEqual((budget.cap, budget.spent, budget.remaining, budget.charged), (10, 2, 8, True))
        self.assertIsNotNone(budget.period_end)
        # Cost 0 only checks.
        checked = Client(self.url).verify(created.key, cost=0)
        assert checked.budget is not None
        self.assertEqual((checked.code, checked.budget.spent), ("VALID", 2))
        self.assertNotIn(created.key, repr(decision))

    def test_a_key_over_its_rate_limit_is_told_when_to_retry(self) -> None:
        created = self.create("limited", rate_limits=["1/1h"])
        client = Client(self.url)
        self.assertEqual(client.verify(created.key).code, "VALID")
        denied = client.verify(created.key)
        self.assertFalse(denied.valid)
        self.assertEqual((denied.code, denied.status, denied.rate_limited), ("RATE_LIMITED", 429, "exhausted"))
        assert denied.retry_after is not None
        self.assertGreater(denied.retry_after, 0)
        self.assertEqual(denied.ratelimits[0].remaining, 0)
        self.assertIsNotNone(denied.ratelimits[0].retry_after)
        self.assertTrue(denied.reason)

    def test_a_spent_budget_is_402(self) -> None:
        created = self.create("budgeted", budget=3, budget_period="total")
        client = Client(self.url)
        self.assertEqual(client.verify(created.key, cost=3).code, "VALID")
        denied = client.verify(created.key, 1)
        self.assertEqual((denied.code, denied.status, denied.valid), ("BUDGET_EXHAUSTED", 402, False))
        assert denied.budget is not None
        self.assertEqual((denied.budget.spent, denied.budget.remaining), (3, 0))
        self.assertIsNone(denied.budget.period_end, "a total budget has no period end")

    def test_malformed_and_unknown_keys_are_denied_without_a_key(self) -> None:
        client = Client(self.url)
        malformed = client.verify("not-a-key")
        self.assertEqual((malformed.code, malformed.status, malformed.valid), ("MALFORMED", 401, False))
        self.assertIsNone(malformed.key_id)
        self.assertTrue(malformed.reason)
        self.assertEqual(malformed.ratelimits, [])
        # Well formed (no checksum to fail), never issued.
        created = self.create("template", prefix="pyn_", checksum=False)
        last = created.key[-1]
        unknown = created.key[:-1] + ("A" if last != "A" else "B")
        decision = client.verify(unknown)
        self.assertEqual((decision.code, decision.status, decision.key_id), ("NOT_FOUND", 401, None))

    def test_allowlists_permissions_project_and_env_are_checked(self) -> None:
        project = self.project()
        created = self.create(
            "fenced",
            project=project,
            allow_ips=["10.0.0.0/8"],
            allow_endpoints=["GET /v1/*"],
            allow_referrers=["*.example.com"],
        )
        client = Client(self.url)

        def verify(
            ip: str = "10.1.2.3",
            endpoint: str = "GET /v1/things",
            referrer: str = "https://app.example.com/page",
            **more: Any,
        ) -> Decision:
            return client.verify(created.key, ip=ip, endpoint=endpoint, referrer=referrer, **more)

        self.assertEqual(verify().code, "VALID")
        for denied, which in [
            (verify(ip="192.168.1.1"), "ip"),
            (verify(endpoint="POST /v1/things"), "endpoint"),
            (verify(referrer="https://evil.test/"), "referrer"),
        ]:
            self.assertEqual((denied.code, denied.status), ("FORBIDDEN", 403), which)
            self.assertIsNotNone(denied.forbidden, which)
        other = verify(project="elsewhere")
        self.assertEqual((other.code, other.forbidden), ("FORBIDDEN", "project"))
        self.assertEqual(verify(env="test").code, "FORBIDDEN")
        self.assertEqual(verify(require="docs:read").code, "VALID")
        needs = verify(require="docs:write", weight=1)
        self.assertEqual((needs.code, needs.status), ("INSUFFICIENT_PERMISSIONS", 403))

    def test_a_request_the_sidecar_cannot_read_raises_without_the_key(self) -> None:
        created = self.create("bad requests")
        client = Client(self.url)
        with self.assertRaises(BadRequestError) as raised:
            client.verify(created.key, endpoint="no-space")
        self.assertError(raised.exception, BadRequestError, "BAD_REQUEST", 400)
        self.assertHides(raised.exception, created.key)
        with self.assertRaises(BadRequestError) as raised:
            client.verify(created.key, ip="not an address")
        self.assertEqual(raised.exception.status, 400)
        self.assertHides(raised.exception, created.key)
        with self.assertRaises(BadRequestError) as raised:
            client.verify(created.key, require="((")
        self.assertEqual(raised.exception.status, 400)
        self.assertHides(raised.exception, created.key)


# ---------------------------------------------------------------------------------------
# errors and secrets


class ErrorTest(Case):
    def test_a_missing_or_unknown_admin_key_is_401(self) -> None:
        with self.assertRaises(UnauthorizedError) as raised:
            Client(self.url).list_keys()
        self.assertError(raised.exception, UnauthorizedError, "UNAUTHORIZED", 401)
        self.assertIsInstance(raised.exception, AuthError)
        made_up = "csa_" + "x" * 38
        with self.assertRaises(UnauthorizedError) as raised:
            Client(self.url, admin_key=made_up).list_keys()
        self.assertError(raised.exception, UnauthorizedError, "UNAUTHORIZED", 401)
        self.assertHides(raised.exception, made_up)

    def test_a_key_that_is_not_an_admin_key_is_403(self) -> None:
        member = self.create("just a member")
        with self.assertRaises(ForbiddenError) as raised:
            Client(self.url, admin_key=member.key).get_key(member.id)
        self.assertError(raised.exception, ForbiddenError, "ADMIN_REQUIRED", 403)
        self.assertIsInstance(raised.exception, AuthError)
        self.assertHides(raised.exception, member.key)

    def test_unknown_and_malformed_ids(self) -> None:
        with self.assertRaises(NotFoundError) as unknown:
            self.admin.get_key("key_0000000000000000000000")
        self.assertError(unknown.exception, NotFoundError, "NOT_FOUND", 404)
        with self.assertRaises(BadRequestError) as malformed:
            self.admin.get_key("no such id")
        self.assertError(malformed.exception, BadRequestError, "INVALID_INPUT", 400)

    def test_bad_input_to_create_is_400_and_writes_nothing(self) -> None:
        project = self.project()
        with self.assertRaises(BadRequestError) as raised:
            self.admin.create_key("bad", project=project, rate_limits=["many per second"])
        self.assertEqual(raised.exception.status, 400)
        with self.assertRaises(BadRequestError):
            self.admin.create_key("bad", project=project, expires_in="2d", expires_at="2030-01-01T00:00:00Z")
        with self.assertRaises(TypeError):
            self.admin.create_key("bad", project=project, permissions="docs:read")
        self.assertEqual(self.admin.list_keys(project=project).keys, [])

    def test_no_sidecar_is_a_connection_error_without_the_key(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # The port is free again: nothing answers there.
        secret = "sk_live_" + "q" * 34
        client = Client(f"http://127.0.0.1:{port}", admin_key=secret, timeout=5)
        with self.assertRaises(CredstoreConnectionError) as raised:
            client.verify(secret)
        self.assertEqual((raised.exception.code, raised.exception.status), ("CONNECTION_ERROR", None))
        self.assertIsInstance(raised.exception, CredstoreError)
        self.assertHides(raised.exception, secret)
        with self.assertRaises(CredstoreConnectionError) as raised:
            client.list_keys()
        self.assertHides(raised.exception, secret)
        self.assertFalse(client.healthy())

    def test_secrets_stay_out_of_reprs(self) -> None:
        created = self.create("repr")
        self.assertNotIn(created.key, repr(created))
        self.assertNotIn(created.key, str(created))
        assert SIDECAR is not None
        self.assertNotIn(SIDECAR.admin_key, repr(self.admin))
        with self.assertRaises(ValueError):
            Client("localhost:8080")


# ---------------------------------------------------------------------------------------
# keys: create, list, show, revoke, rotate; audit; operations


class KeysTest(Case):
    def test_create_then_show_lists_every_setting(self) -> None:
        project = self.project()
        created = self.create(
            "settings",
            project=project,
            prefix="pyt_",
            env="test",
            metadata={"customer": "acme"},
            rate_limits=["10/1m", "100/1h:hourly"],
            budget=100,
            budget_period="monthly",
            expires_in="30d",
            permissions=["docs:write"],
            allow_ips=["10.0.0.0/8"],
            allow_referrers=["*.example.com"],
            allow_endpoints=["GET /v1/*"],
        )
        self.assertTrue(created.key.startswith("pyt_"))
        self.assertTrue(created.key.startswith(created.start))
        self.assertEqual((created.name, created.project, created.env), ("settings", project, "test"))
        self.assertEqual(created.metadata, {"customer": "acme"})
        self.assertIsNotNone(created.expires_at)
        self.assertIsNone(created.replaces)
        info = self.admin.get_key(created.id)
        self.assertEqual(
            (info.id, info.name, info.start, info.project), (created.id, "settings", created.start, project)
        )
        self.assertEqual((info.env, info.status, info.type, info.role), ("test", "active", "service", "member"))
        self.assertEqual(info.created_at, created.created_at)
        self.assertEqual(info.expires_at, created.expires_at)
        self.assertIsNone(info.last_used_at)
        self.assertEqual(info.metadata, {"customer": "acme"})
        self.assertEqual(info.rate_limits, [RateLimit("1m", 10, 60_000), RateLimit("hourly", 100, 3_600_000)])
        self.assertEqual(info.budget, Budget(cap=100, period="monthly", anchor_day=1))
        self.assertEqual(info.permissions, ["docs:write"])
        self.assertEqual(info.allow_ips, ["10.0.0.0/8"])
        self.assertEqual(info.allow_referrers, ["*.example.com"])
        self.assertEqual(info.allow_endpoints, ["GET /v1/*"])
        self.assertIsNone(info.plan)
        self.assertIsNone(info.user)
        self.assertEqual((info.revoked_at, info.rotated_from, info.rotated_to), (None, None, None))
        self.assertNotIn(created.key, repr(info))
        # The key works in its own env, within its allowlists.
        self.assertEqual(
            Client(self.url)
            .verify(created.key, env="test", ip="10.0.0.1", endpoint="GET /v1/a", referrer="https://a.example.com")
            .code,
            "VALID",
        )

    def test_list_filters_by_project_prefix_and_status(self) -> None:
        project = self.project()
        first = self.create("first", project=project)
        second = self.create("second", project=project, prefix="pyl_")
        self.create("elsewhere", project=self.project())
        page = self.admin.list_keys(project=project)
        self.assertEqual([k.id for k in page.keys], [first.id, second.id], "oldest first")
        self.assertIsNone(page.next_cursor)
        self.assertEqual([k.id for k in self.admin.list_keys(project=project, prefix="pyl_").keys], [second.id])
        self.admin.revoke_key(first.id)
        revoked = self.admin.list_keys(project=project, status="revoked").keys
        self.assertEqual([k.id for k in revoked], [first.id])
        self.assertEqual([k.id for k in self.admin.list_keys(project=project, status="active").keys], [second.id])
        with self.assertRaises(BadRequestError):
            self.admin.list_keys(status="sleeping")

    def test_revoke_with_a_reason_stops_the_key(self) -> None:
        created = self.create("to revoke")
        info = self.admin.revoke_key(created.id, reason="left the company")
        self.assertEqual((info.status, info.revoke_reason), ("revoked", "left the company"))
        self.assertIsNotNone(info.revoked_at)
        decision = Client(self.url).verify(created.key)
        self.assertEqual((decision.code, decision.status, decision.valid), ("REVOKED", 401, False))
        with self.assertRaises(ConflictError) as raised:
            self.admin.revoke_key(created.id)
        self.assertError(raised.exception, ConflictError, "CONFLICT", 409)
        # Without a reason.
        plain = self.create("plain revoke")
        self.assertIsNone(self.admin.revoke_key(plain.id).revoke_reason)

    def test_rotate_issues_a_new_key_and_retires_the_old(self) -> None:
        old = self.create("rotating", metadata={"a": "b"})
        new = self.admin.rotate_key(old.id, grace="1h")
        SECRETS.append(new.key)
        self.assertNotEqual((new.id, new.key), (old.id, old.key))
        self.assertEqual((new.replaces, new.name, new.metadata), (old.id, "rotating", {"a": "b"}))
        self.assertIsNotNone(new.old_revoked_at)
        client = Client(self.url)
        self.assertEqual(client.verify(new.key).code, "VALID")
        self.assertEqual(client.verify(old.key).code, "VALID", "within the grace period")
        self.assertEqual(self.admin.get_key(old.id).rotated_to, new.id)
        self.assertEqual(self.admin.get_key(new.id).rotated_from, old.id)
        with self.assertRaises(ConflictError):
            self.admin.rotate_key(old.id)
        # Without grace the old key stops at once.
        at_once = self.admin.rotate_key(new.id)
        SECRETS.append(at_once.key)
        self.assertEqual(client.verify(new.key).code, "REVOKED")
        self.assertEqual(client.verify(at_once.key).code, "VALID")

    def test_audit_filters_by_key_kind_and_time(self) -> None:
        created = self.create("audited")
        self.admin.revoke_key(created.id, reason="audit")
        events = self.admin.audit(key=created.id)
        kinds = [e.kind for e in events]
        self.assertIn("key.created", kinds)
        self.assertIn("key.revoked", kinds)
        self.assertEqual([e.seq for e in events], sorted(e.seq for e in events), "oldest first")
        for e in events:
            self.assertTrue(e.at)
            self.assertIsInstance(e.details, dict)
        revoked = self.admin.audit(kind="key.revoked", since="1h")
        self.assertTrue(revoked)
        self.assertTrue(all(e.kind == "key.revoked" for e in revoked))
        self.assertIn(created.id, [e.details.get("key_id") for e in revoked])
        self.assertEqual(self.admin.audit(key=created.id, until="2000-01-01"), [])
        with self.assertRaises(BadRequestError):
            self.admin.audit(since="the day before yesterday")

    def test_health_and_readiness(self) -> None:
        client = Client(self.url)
        self.assertTrue(client.healthy())
        self.assertTrue(client.ready())


# ---------------------------------------------------------------------------------------
# keys: update, disable, enable, revoke by value, pages


class ManageKeysTest(Case):
    def test_update_changes_only_what_is_given(self) -> None:
        created = self.create("before", metadata={"k": "v"}, budget=50, expires_in="30d", rate_limits=["10/1m"])
        info = self.admin.update_key(created.id, name="after", metadata={"tier": "gold"})
        self.assertEqual((info.name, info.metadata), ("after", {"tier": "gold"}))
        self.assertEqual(info.budget, Budget(cap=50, period="monthly", anchor_day=1), "left as it was")
        self.assertIsNotNone(info.expires_at)
        info = self.admin.update_key(created.id, budget=500, budget_period="daily", rate_limits=[])
        self.assertEqual((info.budget, info.rate_limits), (Budget(cap=500, period="daily", anchor_day=None), []))
        info = self.admin.update_key(created.id, budget=None, expires_at=None, allow_ips=["10.0.0.0/8"])
        self.assertEqual((info.budget, info.expires_at, info.allow_ips), (None, None, ["10.0.0.0/8"]))
        info = self.admin.update_key(created.id, expires_at="2099-01-01T00:00:00Z", permissions=["docs:write"])
        self.assertEqual(info.permissions, ["docs:write"])
        self.assertTrue(info.expires_at and info.expires_at.startswith("2099-01-01"))
        self.assertEqual(self.admin.get_key(created.id), info)
        decision = Client(self.url).verify(created.key, ip="10.9.9.9", require="docs:write")
        self.assertEqual((decision.code, decision.name), ("VALID", "after"))
        with self.assertRaises(BadRequestError):
            self.admin.update_key(created.id)
        with self.assertRaises(BadRequestError):
            self.admin.update_key(created.id, expires_in="soon")
        with self.assertRaises(NotFoundError):
            self.admin.update_key("key_0000000000000000000000", name="x")
        self.assertIs(UNSET, UNSET)

    def test_disable_and_enable(self) -> None:
        created = self.create("switch")
        client = Client(self.url)
        self.assertEqual(self.admin.disable_key(created.id).status, "disabled")
        denied = client.verify(created.key)
        self.assertEqual((denied.code, denied.valid), ("DISABLED", False))
        with self.assertRaises(ConflictError):
            self.admin.disable_key(created.id)
        self.assertEqual(self.admin.enable_key(created.id).status, "active")
        self.assertEqual(client.verify(created.key).code, "VALID")
        with self.assertRaises(ConflictError):
            self.admin.enable_key(created.id)
        with self.assertRaises(NotFoundError):
            self.admin.enable_key("key_0000000000000000000000")

    def test_revoke_by_value_for_a_leaked_key(self) -> None:
        leaked = self.create("leaked")
        info = self.admin.revoke_key_by_value(leaked.key, reason="found in a public repository")
        self.assertEqual((info.id, info.status), (leaked.id, "revoked"))
        self.assertEqual(info.revoke_reason, "found in a public repository")
        self.assertEqual(Client(self.url).verify(leaked.key).code, "REVOKED")
        with self.assertRaises(ConflictError) as again:
            self.admin.revoke_key_by_value(leaked.key)
        self.assertHides(again.exception, leaked.key)
        never = "sk_live_" + "Z" * 34
        with self.assertRaises(NotFoundError) as unknown:
            self.admin.revoke_key_by_value(never)
        self.assertError(unknown.exception, NotFoundError, "NOT_FOUND", 404)
        self.assertHides(unknown.exception, never)

    def test_lists_page_by_cursor(self) -> None:
        project = self.project()
        ids = [self.create(f"page {i}", project=project).id for i in range(5)]
        first = self.admin.list_keys(project=project, limit=2)
        self.assertEqual([k.id for k in first.keys], ids[:2])
        self.assertEqual(first.next_cursor, ids[1])
        second = self.admin.list_keys(project=project, limit=2, after=first.next_cursor)
        self.assertEqual([k.id for k in second.keys], ids[2:4])
        last = self.admin.list_keys(project=project, limit=2, after=second.next_cursor)
        self.assertEqual(([k.id for k in last.keys], last.next_cursor), (ids[4:], None))
        self.assertEqual([k.id for k in self.admin.iter_keys(project=project, page_size=2)], ids)
        self.assertEqual([k.id for k in self.admin.iter_keys(project=project)], ids)
        with self.assertRaises(BadRequestError):
            self.admin.list_keys(limit=0)
        with self.assertRaises(BadRequestError):
            self.admin.list_keys(after="not an id")


class CreditsTest(Case):
    def test_credits_move_what_is_left_this_period(self) -> None:
        created = self.create("credited", budget=100, budget_period="total")
        client = Client(self.url)
        added = self.admin.credits_add(created.id, 50, reason="goodwill")
        self.assertEqual((added.key_id, added.credit, added.cap, added.remaining), (created.id, 50, 150, 150))
        spent = client.verify(created.key, cost=10)
        assert spent.budget is not None
        self.assertEqual((spent.code, spent.budget.cap, spent.budget.remaining), ("VALID", 150, 140))
        self.assertEqual(self.admin.credits_set(created.id, 5, reason="trial over").remaining, 5)
        self.assertEqual(client.verify(created.key, cost=6).code, "BUDGET_EXHAUSTED")
        self.assertEqual(client.verify(created.key, cost=5).code, "VALID")
        self.assertEqual(self.admin.credits_add(created.id, -1000).remaining, 0, "never below nothing")
        reasons = [e.details.get("reason") for e in self.admin.audit(key=created.id, kind="budget.credited")]
        self.assertIn("goodwill", reasons)
        self.assertIn("trial over", reasons)
        with self.assertRaises(ConflictError):
            self.admin.credits_add(self.create("no budget").id, 10)
        with self.assertRaises(NotFoundError):
            self.admin.credits_set("key_0000000000000000000000", 10)


class EventsTest(Case):
    def test_the_change_feed_pages_follows_and_long_polls(self) -> None:
        whole = self.admin.events(0, limit=10_000)
        self.assertTrue(whole.events)
        seqs = [e.seq for e in whole.events]
        self.assertEqual(seqs, sorted(seqs), "oldest first")
        self.assertEqual(whole.next_cursor, seqs[-1])
        first = self.admin.events(0, limit=1)
        self.assertEqual(first.next_cursor, whole.events[0].seq)
        beyond = whole.next_cursor + 1_000_000
        self.assertEqual(self.admin.events(beyond), EventPage(events=[], next_cursor=beyond))
        # Following from the tail: a key created while a long poll waits arrives.
        tail = whole.next_cursor
        seen: queue.Queue[Event] = queue.Queue()

        def follow() -> None:
            for event in itertools.islice(self.admin.follow_events(tail, wait=20), 10_000):
                seen.put(event)
                if event.kind == "key.created":
                    return

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        created = self.create("fed")
        follower.join(timeout=START_STOP_LIMIT)
        self.assertFalse(follower.is_alive(), "the feed never brought the new key")
        kinds = {(e.kind, e.details.get("key_id")) for e in list(seen.queue)}
        self.assertIn(("key.created", created.id), kinds)
        with self.assertRaises(BadRequestError):
            self.admin.events(0, wait=60)
        with self.assertRaises(BadRequestError):
            self.admin.events(0, limit=0)


class DirectoryTest(Case):
    def test_plans_are_set_listed_followed_and_deleted(self) -> None:
        name = "py-plan-" + uuid.uuid4().hex[:8]
        plan = self.admin.set_plan(name, rate_limits=["100/1m"], budget=1000, budget_period="daily")
        self.assertEqual(plan.name, name)
        self.assertEqual(plan.rate_limits, [RateLimit("1m", 100, 60_000)])
        self.assertEqual(plan.budget, Budget(cap=1000, period="daily", anchor_day=None))
        self.assertIn(plan, self.admin.list_plans())
        created = self.create("on a plan", plan=name)
        self.assertEqual(self.admin.get_key(created.id).plan, name)
        decision = Client(self.url).verify(created.key, cost=5)
        assert decision.budget is not None
        self.assertEqual((decision.budget.cap, decision.budget.spent), (1000, 5))
        self.assertEqual([r.limit for r in decision.ratelimits], [100])
        # Keys follow a changed plan at once.
        self.admin.set_plan(name, rate_limits=["7/1m"])
        self.assertEqual([r.limit for r in Client(self.url).verify(created.key).ratelimits], [7])
        with self.assertRaises(ConflictError):
            self.admin.delete_plan(name)
        self.admin.update_key(created.id, plan=None)
        self.admin.delete_plan(name)
        self.assertNotIn(name, [p.name for p in self.admin.list_plans()])
        with self.assertRaises(NotFoundError):
            self.admin.delete_plan(name)
        with self.assertRaises(BadRequestError):
            self.admin.set_plan(name, rate_limits=["lots"])

    def test_roles_are_set_listed_used_and_deleted(self) -> None:
        name = "py-role-" + uuid.uuid4().hex[:8]
        role = self.admin.set_role(name, ["docs:read", "docs:write"])
        self.assertEqual((role.name, sorted(role.permissions)), (name, ["docs:read", "docs:write"]))
        roles = {r.name: r for r in self.admin.list_roles()}
        self.assertIn(name, roles)
        self.assertIn("admin", roles)
        created = self.create("with a role", role=name)
        client = Client(self.url)
        self.assertEqual(client.verify(created.key, require="docs:write").code, "VALID")
        self.assertEqual(client.verify(created.key, require="users:read").code, "INSUFFICIENT_PERMISSIONS")
        self.admin.set_role(name, ["docs:read"])
        self.assertEqual(client.verify(created.key, require="docs:write").code, "INSUFFICIENT_PERMISSIONS")
        with self.assertRaises(ConflictError):
            self.admin.delete_role(name)
        with self.assertRaises(ConflictError):
            self.admin.set_role("admin", ["docs:read"])
        unused = self.admin.set_role(name + "-x", ["docs:read"]).name
        self.admin.delete_role(unused)
        self.assertNotIn(unused, [r.name for r in self.admin.list_roles()])
        with self.assertRaises(NotFoundError):
            self.admin.delete_role(unused)

    def test_users_are_set_listed_and_removed(self) -> None:
        project = self.project()
        user_id = "py-user-" + uuid.uuid4().hex[:8]
        user = self.admin.set_user(user_id, {project: "viewer"})
        self.assertEqual((user.id, user.memberships), (user_id, {project: "viewer"}))
        self.assertIn(user, self.admin.list_users())
        token = self.create("personal", key_type="personal", user=user_id, project=project)
        info = self.admin.get_key(token.id)
        self.assertEqual((info.type, info.user), ("personal", user_id))
        client = Client(self.url)
        self.assertEqual(client.verify(token.key, require="docs:read").code, "VALID")
        self.assertEqual(client.verify(token.key, require="docs:write").code, "INSUFFICIENT_PERMISSIONS")
        self.admin.set_user(user_id, {project: "member"})
        self.assertEqual(client.verify(token.key, require="jobs:run").code, "VALID")
        self.admin.remove_user(user_id)
        self.assertNotIn(user_id, [u.id for u in self.admin.list_users()])
        self.assertFalse(client.verify(token.key).valid, "a removed user's tokens are refused")
        with self.assertRaises(NotFoundError):
            self.admin.remove_user(user_id)
        with self.assertRaises(NotFoundError):
            self.admin.set_user(user_id, {project: "no-such-role"})


class VaultTest(Case):
    def test_the_vault_puts_lists_reads_rotates_and_deletes(self) -> None:
        project = self.project()
        first, second = "sk-provider-" + uuid.uuid4().hex, "sk-provider-" + uuid.uuid4().hex
        SECRETS.extend([first, second])
        stored = self.admin.vault_put("openai", first, project=project)
        self.assertEqual((stored.project, stored.name, stored.version), (project, "openai", 1))
        self.assertGreaterEqual(stored.master_version, 1)
        self.assertEqual(self.admin.vault_put("openai", second, project=project).version, 2)
        listed = self.admin.vault_list(project)
        self.assertEqual([(s.name, s.version) for s in listed], [("openai", 1), ("openai", 2)])
        self.assertTrue(all(s.project == project and s.created_at for s in listed))
        self.assertIn(project, {s.project for s in self.admin.vault_list()})
        # Reading a value takes an admin key with vault:read of its own.
        with self.assertRaises(ForbiddenError) as raised:
            self.admin.vault_get("openai", project=project)
        self.assertError(raised.exception, ForbiddenError, "INSUFFICIENT_PERMISSIONS", 403)
        self.assertHides(raised.exception, first, second)
        reader_key = self.create("vault reader", role="admin", permissions=["vault:read"])
        reader = Client(self.url, admin_key=reader_key.key)
        latest = reader.vault_get("openai", project=project)
        self.assertEqual((latest.project, latest.name, latest.version, latest.secret), (project, "openai", 2, second))
        self.assertNotIn(second, repr(latest))
        self.assertEqual(reader.vault_get("openai", project=project, version=1).secret, first)
        with self.assertRaises(NotFoundError):
            reader.vault_get("openai", project=project, version=9)
        reads = self.admin.audit(kind="vault.read")
        self.assertTrue(reads)
        self.assertTrue(all(first not in str(e.details) and second not in str(e.details) for e in reads))
        # A new master key: every data key rewrapped, every secret still readable.
        rotation = self.admin.vault_rotate_master(generate=True)
        self.assertGreaterEqual(rotation.master_version, 2)
        self.assertGreaterEqual(rotation.rewrapped, 2)
        self.assertIsNone(rotation.retired_below)
        assert rotation.master_key is not None
        self.assertTrue(rotation.master_key.startswith(f"{rotation.master_version}:"))
        self.assertNotIn(rotation.master_key, repr(rotation))
        SECRETS.append(rotation.master_key.split(":", 1)[1])
        self.assertEqual(reader.vault_get("openai", project=project).secret, second)
        self.assertTrue(all(s.master_version == rotation.master_version for s in self.admin.vault_list(project)))
        with self.assertRaises(BadRequestError):
            self.admin.vault_rotate_master()
        self.admin.vault_delete("openai", project=project)
        self.assertEqual(self.admin.vault_list(project), [])
        with self.assertRaises(NotFoundError):
            reader.vault_get("openai", project=project)
        with self.assertRaises(NotFoundError):
            self.admin.vault_delete("openai", project=project)


class AuditOrderTest(Case):
    def test_audit_newest_first_and_limit(self) -> None:
        created = self.create("ordered")
        self.admin.disable_key(created.id)
        self.admin.enable_key(created.id)
        oldest = self.admin.audit(key=created.id, limit=2)
        self.assertEqual([e.kind for e in oldest], ["key.created", "key.disabled"])
        newest = self.admin.audit(key=created.id, newest_first=True, limit=2)
        self.assertEqual([e.kind for e in newest], ["key.enabled", "key.disabled"])
        self.assertGreater(newest[0].seq, newest[1].seq)
        self.assertEqual(len(self.admin.audit(newest_first=False, limit=1)), 1)

    def test_the_openapi_document_lists_the_clients_routes(self) -> None:
        doc = Client(self.url).openapi()
        self.assertTrue(str(doc.get("openapi", "")).startswith("3."))
        paths = doc.get("paths", {})
        for path in [
            "/v1/keys.verify",
            "/v1/api-keys",
            "/v1/api-keys/{id}",
            "/v1/api-keys/{id}/disable",
            "/v1/api-keys/{id}/enable",
            "/v1/api-keys/{id}/rotate",
            "/v1/api-keys/revoke-by-key",
            "/v1/plans",
            "/v1/plans/{name}",
            "/v1/roles",
            "/v1/roles/{name}",
            "/v1/users",
            "/v1/users/{id}",
            "/v1/vault/secrets",
            "/v1/vault/secrets/{name}",
            "/v1/vault/rotate-master",
            "/v1/api-keys/{id}/credits",
            "/v1/audit",
            "/v1/events",
        ]:
            self.assertIn(path, paths)


if __name__ == "__main__":
    unittest.main()
