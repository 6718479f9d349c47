"""Who may do what on Discord: an `Actor` from a member, and app-command checks that say which right is missing.

Admin = Discord's Manage Server permission or a user id in `discord.admin_ids`; moderator = Manage Messages (admins
are moderators too). In DMs nobody has server rights, except the configured admins.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, TypeVar

import discord
from discord import app_commands

from cogs.common.actor import Actor

T = TypeVar("T")

ADMIN_PERMISSION = "Manage Server"
MODERATOR_PERMISSION = "Manage Messages"


class MissingRights(app_commands.CheckFailure):
    """The user lacks the Discord permission a command needs; the message tells them which."""

    def __init__(self, permission: str) -> None:
        self.permission = permission
        super().__init__(
            f"You need the {permission} permission in this server to use this command "
            "(or be listed as an admin in the bot's config)."
        )


def actor_from(
    user: discord.abc.User, *, admin_ids: Collection[int] = (), permissions: discord.Permissions | None = None
) -> Actor:
    """The platform-free identity of a Discord user (a guild `Member` carries permissions; a DM `User` does not).

    `permissions` overrides the member's server-wide permissions (an interaction says what the user may do in the
    channel it came from, channel overrides included).
    """
    is_admin = user.id in admin_ids
    is_moderator = is_admin
    perms = permissions if permissions is not None else getattr(user, "guild_permissions", None)
    if perms is not None:
        is_admin = is_admin or perms.manage_guild or perms.administrator
        is_moderator = is_admin or perms.manage_messages
    return Actor(
        platform="discord",
        user_id=str(user.id),
        name=user.display_name,
        is_moderator=is_moderator,
        is_admin=is_admin,
    )


def interaction_actor(interaction: discord.Interaction) -> Actor:
    permissions = interaction.permissions if interaction.guild_id is not None else None
    return actor_from(interaction.user, admin_ids=_admin_ids(interaction.client), permissions=permissions)


def require_admin() -> Callable[[T], T]:
    """App-command check: Manage Server (or a configured admin id)."""

    def predicate(interaction: discord.Interaction) -> bool:
        if not interaction_actor(interaction).is_admin:
            raise MissingRights(ADMIN_PERMISSION)
        return True

    return app_commands.check(predicate)


def require_moderator() -> Callable[[T], T]:
    """App-command check: Manage Messages (or admin rights)."""

    def predicate(interaction: discord.Interaction) -> bool:
        if not interaction_actor(interaction).is_moderator:
            raise MissingRights(MODERATOR_PERMISSION)
        return True

    return app_commands.check(predicate)


def _admin_ids(client: Any) -> Collection[int]:
    runtime = getattr(client, "runtime", None)
    return runtime.config.discord.admin_ids if runtime is not None else ()
