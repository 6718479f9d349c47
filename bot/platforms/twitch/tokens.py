"""Twitch credentials: read from the environment once, kept (with every refresh) only in our database.

The owner puts the bot account's user token and refresh token into the environment. Twitch rotates both on every
refresh, so the refreshed pair is stored in the store's kv table and used on the next start, for as long as the
environment still holds the pair that started the chain; a new pair in the environment (the owner re-authorized)
wins over the stored one. Nothing here logs or formats a token.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass

from bot.config import TwitchConfig
from bot.store import Store

KV_PREFIX = "twitch.token."  # + user id


class TwitchCredentialsError(RuntimeError):
    """Credentials are missing from the environment; the message names the variables, never their values."""


@dataclass(frozen=True)
class TwitchCredentials:
    client_id: str
    client_secret: str
    bot_id: str
    token: str
    refresh: str
    env: TwitchConfig  # to name the variables in messages

    def __repr__(self) -> str:  # a dataclass repr would print the secrets
        return f"TwitchCredentials(client_id={self.client_id!r}, bot_id={self.bot_id!r})"

    @property
    def fingerprint(self) -> str:
        """Identifies the environment's token pair without revealing it."""
        return hashlib.sha256(f"{self.token}\0{self.refresh}".encode()).hexdigest()[:16]

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.client_secret, self.token, self.refresh) if s)


def read_credentials(config: TwitchConfig, environ: dict[str, str] | None = None) -> TwitchCredentials:
    env = os.environ if environ is None else environ
    names = {
        "client_id": config.client_id_env,
        "client_secret": config.client_secret_env,
        "bot_id": config.bot_id_env,
        "token": config.bot_token_env,
        "refresh": config.bot_refresh_token_env,
    }
    values = {key: env.get(name, "").strip() for key, name in names.items()}
    missing = [names[key] for key, value in values.items() if not value]
    if missing:
        raise TwitchCredentialsError(
            f"Twitch is enabled but these environment variables are not set: {', '.join(missing)} "
            "(see docs/twitch.md for how to get them)"
        )
    if not values["bot_id"].isdigit():
        raise TwitchCredentialsError(
            f"{config.bot_id_env} must be the bot account's numeric user id, not its name"
        )
    values["token"] = values["token"].removeprefix("oauth:")
    return TwitchCredentials(env=config, **values)


@dataclass(frozen=True)
class StoredToken:
    user_id: str
    token: str
    refresh: str
    origin: str  # fingerprint of the environment pair this one descends from

    def __repr__(self) -> str:
        return f"StoredToken(user_id={self.user_id!r}, origin={self.origin!r})"


class TokenVault:
    """The bot's tokens in the store's kv table."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def load(self, user_id: str) -> StoredToken | None:
        raw = await self._store.kv_get(KV_PREFIX + user_id)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return StoredToken(
                user_id=user_id, token=data["token"], refresh=data["refresh"], origin=data.get("origin", "")
            )
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: the environment's pair is used and overwrites it

    async def save(self, token: StoredToken) -> None:
        value = json.dumps(
            {"token": token.token, "refresh": token.refresh, "origin": token.origin, "saved_at": time.time()}
        )
        await self._store.kv_set(KV_PREFIX + token.user_id, value)

    async def forget(self, user_id: str) -> None:
        await self._store.kv_delete(KV_PREFIX + user_id)
