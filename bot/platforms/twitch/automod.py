"""Ask Twitch AutoMod about a line before the bot posts it (`[safety] twitch_automod_check`).

Helix `POST moderation/enforcements/status?broadcaster_id=...` with `{"data": [{"msg_id", "msg_text"}]}` answers
`is_permitted` per message, by the channel's own AutoMod settings and blocked terms. Twitch wants a user token with
`moderation:read` whose user is the broadcaster: the bot's token in its own channel, or a broadcaster's token the bot
holds; elsewhere the bot's token is tried. Where no token has the scope, or Twitch refuses the check (401/403), the
channel is checked by our own moderator only, said once in the log. A rate-limited or failed check lets the line go (it passed our moderator
already); AutoMod's limit is small (5 checks a minute for an ordinary account, 30 for a partner).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any, Final

import twitchio
from twitchio.models.moderation import AutomodCheckMessage

log = logging.getLogger(__name__)

SCOPE: Final = "moderation:read"
REASON: Final = "Twitch AutoMod would not permit it"
SOURCE: Final = "twitch-automod"


class AutoModCheck:
    """`permits(channel_id, text)`: False only when Twitch AutoMod answered `is_permitted: false`."""

    def __init__(self, http: Any, *, bot_id: str, scopes_of: Callable[[str], frozenset[str]]) -> None:
        """`http` is the bot's twitchio HTTP client; `scopes_of(user_id)` the scopes of the token held for a user."""
        self._http = http
        self._bot_id = bot_id
        self._scopes_of = scopes_of
        self._unchecked: set[str] = set()  # channels where Twitch will not check for us: said once
        self._ids = itertools.count(1)

    async def permits(self, channel_id: str, text: str) -> bool:
        if channel_id in self._unchecked:
            return True
        # The broadcaster's own token when the bot holds one (in its own channel, that is the bot's), else the
        # bot's: Twitch answers 403 where it wants the broadcaster's, and the channel is then left to our check.
        token_for = channel_id if SCOPE in self._scopes_of(channel_id) else self._bot_id
        if SCOPE not in self._scopes_of(token_for):
            self._skip(channel_id, f"the bot's token lacks the {SCOPE} scope")
            return True
        try:
            data = await self._http.post_check_automod_status(
                broadcaster_id=channel_id,
                messages=[AutomodCheckMessage(id=str(next(self._ids)), text=text)],
                token_for=token_for,
            )
        except twitchio.HTTPException as exc:
            if exc.status in (401, 403):
                self._skip(channel_id, f"Twitch refused the check (HTTP {exc.status})")
            elif exc.status == 429:
                log.info("Twitch AutoMod check rate-limited in %s; posting on our own check", channel_id)
            else:
                log.warning("Twitch AutoMod check failed in %s (HTTP %s); posting", channel_id, exc.status)
            return True
        return all(bool(row.get("is_permitted", True)) for row in data.get("data", []))

    def _skip(self, channel_id: str, why: str) -> None:
        self._unchecked.add(channel_id)
        log.warning(
            "Twitch AutoMod check is off in channel %s (%s); our own moderator still checks every line",
            channel_id,
            why,
        )
