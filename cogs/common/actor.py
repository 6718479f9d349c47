"""Who is acting, on which platform, with which rights: the platform-free identity every service takes."""

from __future__ import annotations

from dataclasses import dataclass

from bot.store import Platform


@dataclass(frozen=True)
class Actor:
    platform: Platform
    user_id: str
    name: str
    is_moderator: bool = False
    is_admin: bool = False
