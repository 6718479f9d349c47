"""The dashboard's one secret: where it comes from, how a request proves it knows it, the session cookie.

A request is let in with `Authorization: Bearer <secret>` or with the session cookie that the login form sets. The
cookie holds no secret: it is `v1.<expiry>.<nonce>.<HMAC-SHA256(key, expiry.nonce)>`, with the key derived from the
secret, so changing the secret signs everybody out. Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable

from bot.config import Config, ConfigError

MIN_SECRET_CHARS = 16
SESSION_TTL_S = 12 * 3600
COOKIE_NAME = "familiar_dashboard"
_KEY_CONTEXT = b"familiar-dashboard-session-v1"


def dashboard_secret(config: Config) -> str | None:
    """The secret when the dashboard is enabled (None when it is off); a missing or short one is a ConfigError."""
    d = config.dashboard
    if not d.enabled:
        return None
    value = os.environ.get(d.secret_env, "").strip()
    hint = "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    if not value:
        raise ConfigError(
            f"{config.source}: 'dashboard.enabled' is true but environment variable {d.secret_env} "
            f"(named by 'dashboard.secret_env') is not set; the dashboard never runs without a secret. "
            f"Set it to a long random string ({hint}) or turn the dashboard off"
        )
    if len(value) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"{config.source}: the dashboard secret in {d.secret_env} is shorter than {MIN_SECRET_CHARS} "
            f"characters; use a long random string ({hint})"
        )
    return value


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class Authenticator:
    def __init__(
        self, secret: str, *, clock: Callable[[], float] = time.time, ttl_s: float = SESSION_TTL_S
    ) -> None:
        if not secret:
            raise ValueError("the dashboard needs a secret")
        self._secret_digest = _digest(secret)
        self._key = hmac.new(secret.encode("utf-8"), _KEY_CONTEXT, hashlib.sha256).digest()
        self._clock = clock
        self._ttl = ttl_s

    def check_secret(self, candidate: str | None) -> bool:
        """Constant-time: both sides are hashed to the same length first, so not even the length leaks."""
        if candidate is None:
            return False
        return hmac.compare_digest(_digest(candidate), self._secret_digest)

    def check_bearer(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and self.check_secret(token.strip())

    def new_session(self) -> str:
        expires = int(self._clock() + self._ttl)
        nonce = secrets.token_urlsafe(12)
        return f"v1.{expires}.{nonce}.{self._sign(f'{expires}.{nonce}')}"

    def check_session(self, token: str | None) -> bool:
        if not token:
            return False
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != "v1":
            return False
        _, expires, nonce, signature = parts
        if not hmac.compare_digest(self._sign(f"{expires}.{nonce}"), signature):
            return False
        try:
            return int(expires) > self._clock()
        except ValueError:
            return False

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._key, payload.encode("utf-8"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")
