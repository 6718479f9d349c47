"""The story game in the terminal: `/story start|do|say|undo|retry|status|end|pick`, votes by `/vote N` or a number.

The console's one person is its admin, so a `/story do` is taken at once and a single vote is a majority.
Scenes, decisions and endings arrive as service events and are printed through `notify`, including those a timer
causes while nobody types; a command waits until its own consequences are printed before the next line is read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from bot.console import ConsoleCommand
from cogs.common.actor import Actor
from cogs.story.render import choice_lines, decision_text, status_lines
from cogs.story.service import StoryError, StoryService
from cogs.story.state import (
    BallotChanged,
    SceneDelayed,
    SceneOpened,
    StoryEnded,
    StoryEvent,
    StoryPaused,
    is_write_in,
)

PLATFORM: Final = "console"
CHANNEL_ID = "local"
USAGE = (
    "Usage: /story start [premise] | /story do <action> | /story say <words> | /story pick <n> | "
    "/story undo | /story retry | /story status | /story end — and vote with /vote <n> or just the number."
)


def story_commands(
    service: StoryService, *, user_name: str, notify: Callable[[str], None]
) -> list[ConsoleCommand]:
    """`/story` and `/vote` for the console; `notify` prints a line (events arrive while the prompt waits)."""
    actor = Actor(PLATFORM, "local", user_name, is_moderator=True, is_admin=True)

    async def on_event(event: StoryEvent) -> None:
        for line in event_lines(event):
            notify(line)
        if isinstance(event, SceneOpened):
            await service.scene_posted(event.turn.turn_id)  # printed: not announced again at the next start

    service.subscribe(PLATFORM, on_event)

    async def story(args: str) -> str | list[str] | None:
        sub, _, rest = args.strip().partition(" ")
        sub, rest = sub.lower(), rest.strip()
        try:
            if sub == "start":
                await service.begin(actor, CHANNEL_ID, rest)
            elif is_write_in(sub):
                ack = await service.write_in(actor, CHANNEL_ID, sub, rest)
                if ack.closing is not None:
                    await ack.closing
            elif sub == "pick":
                if not rest.isdigit():
                    return "Usage: /story pick <n>"
                await (await service.pick(actor, CHANNEL_ID, int(rest)))
            elif sub == "undo":
                await service.undo(actor, CHANNEL_ID)
            elif sub == "retry":
                await service.retry(actor, CHANNEL_ID)
            elif sub == "status":
                return status_lines(service.status(PLATFORM, CHANNEL_ID))
            elif sub == "end":
                await service.end(actor, CHANNEL_ID)
            else:
                return USAGE
        except StoryError as exc:
            return str(exc)
        await service.flush_events()
        return None

    async def vote(args: str) -> str | None:
        text = args.strip().lstrip("#")
        if not text.isdigit():
            return "Usage: /vote <n> (the number of a choice)"
        try:
            ack = await service.vote(actor, CHANNEL_ID, int(text))
        except StoryError as exc:
            return str(exc)
        if ack.closing is not None:
            await ack.closing
            await service.flush_events()
            return None
        return f"(your vote: {ack.option}. {ack.label})"

    def bare_vote(text: str) -> bool:
        return text.isdigit() and len(text) == 1 and service.has_open_vote(PLATFORM, CHANNEL_ID)

    return [
        ConsoleCommand(
            "story", "/story start [premise]", "play a story game (/story for all its commands)", story
        ),
        ConsoleCommand(
            "vote", "/vote <n>", "vote for a choice in the story (or type just the number)", vote, bare_vote
        ),
    ]


def event_lines(event: StoryEvent) -> list[str]:
    """What the console prints for a story event."""
    if isinstance(event, SceneOpened):
        t = event.turn
        lines = []
        if event.decision is not None:
            lines.append(f"→ {decision_text(event.decision)}")
        if event.cause == "undo":
            lines.append("(back one scene)")
        elif event.cause == "retry":
            lines.append("(the scene, told again)")
        lines.append(f"{t.narrator} — scene {t.number}: {t.narration}")
        lines.extend(f"  {line}" for line in choice_lines(t))
        lines.append("(vote with /vote <n> or just the number; /story do <action> to write your own)")
        return lines
    if isinstance(event, SceneDelayed):
        return [f"(the narrator is busy; the vote closes again in {round(event.retry_in_s)} s)"]
    if isinstance(event, StoryPaused):
        return ["(nobody voted: the story is paused until someone does)"]
    if isinstance(event, StoryEnded):
        if event.reason == "last_scene":
            return [f"The End. (the story reached its last scene, {event.scenes})"]
        return [f"The End. ({event.scenes} scene{'s' * (event.scenes != 1)}; ended by {event.by})"]
    if isinstance(event, BallotChanged):
        return []
    return []
