"""`/poll` in the local console: create, vote, close, cancel and show results; the console user is an admin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from bot.console import CHANNEL_ID, ConsoleCommand
from cogs.common.actor import Actor
from cogs.polls.announce import Announcement
from cogs.polls.model import PollError, format_duration
from cogs.polls.results import Results
from cogs.polls.service import PollService
from cogs.polls.syntax import CREATE_USAGE, parse_create

PLATFORM: Final = "console"
USAGE = [
    f"/poll create {CREATE_USAGE}",
    "/poll vote N|option text",
    "/poll close  |  /poll cancel  |  /poll results [poll number]",
]


def poll_commands(
    polls: PollService,
    *,
    user_name: str = "you",
    character: str = "",
    notify: Callable[[str], None] | None = None,
) -> list[ConsoleCommand]:
    """The console's `/poll` command. `notify` prints results when a poll closes on its own (at its deadline)."""
    me = Actor(PLATFORM, "local", user_name, is_moderator=True, is_admin=True)
    closed_here: set[int] = set()  # closed by this console's command, which already printed the results

    if notify is not None:

        async def on_closed(results: Results, announcement: Announcement) -> None:
            shown = results.poll.id in closed_here
            closed_here.discard(results.poll.id)
            for line in closed_lines(results, announcement, character=character, with_results=not shown):
                notify(line)

        polls.on_closed(PLATFORM, on_closed)

    async def handle(args: str) -> str | list[str]:
        sub, _, rest = args.strip().partition(" ")
        sub = sub.lower()
        rest = rest.strip()
        try:
            if sub == "create":
                spec = parse_create(rest)
                poll = await polls.create(
                    me, spec.question, spec.options, spec.duration, channel_id=CHANNEL_ID, multi=spec.multi
                )
                kind = " (multiple choice: vote once per option you like)" if poll.multi else ""
                options = [f"  {i}. {label}" for i, label in enumerate(poll.options, 1)]
                duration = format_duration(poll.closes_at - poll.created_at)
                return [
                    f"Poll #{poll.id} is open for {duration}{kind}: {poll.question}",
                    *options,
                    "Vote with /poll vote N",
                ]
            if sub == "vote":
                if not rest:
                    return "Write: /poll vote N (or the option's text)"
                return (await polls.vote_in(me, CHANNEL_ID, rest)).message()
            if sub in ("close", "end", "cancel"):
                poll = polls.open_in(PLATFORM, CHANNEL_ID)
                closed_here.add(poll.id)
                try:
                    results = await polls.close_poll(me, poll.id, cancel=sub == "cancel")
                except PollError:
                    closed_here.discard(poll.id)
                    raise
                return results.summary().splitlines()
            if sub == "results":
                if rest:
                    number = rest.lstrip("#")
                    if not number.isdecimal():
                        return "Write: /poll results [poll number]"
                    return (await polls.results(int(number))).summary().splitlines()
                return (await polls.results_in(PLATFORM, CHANNEL_ID)).summary().splitlines()
        except PollError as exc:
            return str(exc)
        return ["Usage:", *(f"  {line}" for line in USAGE)]

    return [
        ConsoleCommand("poll", "/poll create|vote|close|results", "run a poll (/poll for details)", handle)
    ]


def closed_lines(
    results: Results, announcement: Announcement, *, character: str, with_results: bool = True
) -> list[str]:
    """What the console prints when a poll closes: the results table (unless shown already), the announcement."""
    speaker = f"{character}: " if announcement.in_character and character else ""
    table = results.summary().splitlines() if with_results else []
    return [*table, f"{speaker}{announcement.text}"]
