"""Who is speaking in Twitch chat, and with which rights, from the badges EventSub sends with every message."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from cogs.common.actor import Actor

if TYPE_CHECKING:
    import twitchio

ADMIN_BADGES = frozenset({"broadcaster"})
MODERATOR_BADGES = frozenset({"broadcaster", "moderator", "lead_moderator"})


def badge_sets(badges: Iterable[object]) -> frozenset[str]:
    """The badge set ids ("moderator", "subscriber", ...) of twitchio badges or plain strings."""
    return frozenset(b if isinstance(b, str) else str(getattr(b, "set_id", "")) for b in badges)


def actor_from_badges(user_id: str, name: str, badges: Iterable[object]) -> Actor:
    """Broadcaster -> admin and moderator; moderator (or lead moderator) -> moderator; everyone else -> neither."""
    sets = badge_sets(badges)
    return Actor(
        platform="twitch",
        user_id=user_id,
        name=name,
        is_moderator=bool(sets & MODERATOR_BADGES),
        is_admin=bool(sets & ADMIN_BADGES),
    )


def actor_from_message(message: twitchio.ChatMessage) -> Actor:
    """The viewer who wrote a chat message, named as chat shows them, with the rights their badges give."""
    chatter = message.chatter
    return actor_from_badges(chatter.id, chatter.display_name or chatter.name or chatter.id, message.badges)


def is_elevated(badges: Iterable[object]) -> bool:
    """Moderator or broadcaster: Twitch lets such an account send 100 messages per 30 s instead of 20."""
    return bool(badge_sets(badges) & MODERATOR_BADGES)
