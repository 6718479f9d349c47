"""A story as the conversation log holds it, so stories can be part of the character's retraining: each scene is
the narrator's turn, and the action that led to it the audience's (or its write-in's author's, so `forget` deletes it
with their messages)."""

from __future__ import annotations

from functools import partial

from bot.store import MessageRecord
from cogs.common.actor import Actor
from cogs.common.ballot_keys import is_anonymous
from cogs.story import prompt as story_prompt
from cogs.story.state import Game, Option, Turn


def scene_records(
    game: Game, turn: Turn, *, author: Actor | None, action_author: Option | None = None
) -> tuple[MessageRecord, MessageRecord]:
    """The action (as the audience's turn) and the scene (as the narrator's turn), for retraining."""
    conversation = f"story:{game.platform}:{game.id}"
    if turn.action_kind == "start":
        who_id, who_name = (author.user_id, author.name) if author else ("audience", "audience")
        ask = story_prompt.instruction("", opening=True, premise=game.premise)
    else:
        # A forgotten author's key (hashed or a token) is no one's id: such an action is the audience's.
        if (
            action_author is not None
            and action_author.author_id
            and not is_anonymous(action_author.author_id)
        ):
            who_id, who_name = action_author.author_id, action_author.author_name or "audience"
        else:
            who_id, who_name = "audience", "audience"
        ask = story_prompt.action_line(turn.action)
    record = partial(
        MessageRecord,
        platform=game.platform,
        guild_id=game.guild_id,
        channel_id=game.channel_id,
        conversation_id=conversation,
    )
    text = story_prompt.scene_text(turn.narration, [o.label for o in turn.options])
    return (
        record(author_id=who_id, author_name=who_name, role="user", content=ask),
        record(author_id="familiar", author_name=game.narrator, role="narrator", content=text),
    )
