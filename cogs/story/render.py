"""Story text for people, platform-free: a scene with its numbered choices, a decision, a status. Each platform
passes its own length limit (Discord 2000, Twitch 500) and adds its own formatting around these lines."""

from __future__ import annotations

from cogs.story.state import DecisionView, OptionView, StatusView, TurnView
from cogs.story.voting import Resolution
from models.cleaning import split_message


def option_line(option: OptionView, count: int | None = None) -> str:
    if option.kind == "say":
        text = f'say "{option.label}"'
    elif option.kind == "do":
        text = f"do: {option.label}"
    else:
        text = option.label
    if option.author_name and option.kind != "choice":
        text += f" ({option.author_name})"
    votes = f" [{count}]" if count is not None else ""
    return f"{option.position}. {text}{votes}"


def choice_lines(turn: TurnView, *, counts: bool = False) -> list[str]:
    return [option_line(o, turn.counts.get(o.position, 0) if counts else None) for o in turn.options]


def scene_messages(turn: TurnView, *, limit: int, vote_hint: str = "", counts: bool = False) -> list[str]:
    """The scene as messages within `limit` characters: narration first, then the choices (and the hint)."""
    head = f"📖 Scene {turn.number} — {turn.narrator}: {turn.narration}"
    tail = (
        " | ".join(choice_lines(turn, counts=counts))
        if limit < 1000
        else "\n".join(choice_lines(turn, counts=counts))
    )
    if vote_hint:
        tail += (" — " if limit < 1000 else "\n") + vote_hint
    joined = f"{head}\n{tail}"
    if len(joined) <= limit:
        return [joined]
    return [*split_message(head, limit), *split_message(tail, limit)]


def decision_text(decision: DecisionView) -> str:
    """How a scene was decided, in one line."""
    total = sum(decision.counts.values())
    if decision.resolution == Resolution.MODERATOR:
        return f"{decision.by or 'A moderator'} chose {decision.option}: {decision.label}"
    if decision.resolution == Resolution.RANDOM:
        return f"Nobody voted, so fate chose {decision.option}: {decision.label}"
    if decision.resolution == Resolution.TIE:
        tied = ", ".join(str(t) for t in decision.tied)
        return (
            f"A tie between {tied} ({total} vote{'s' * (total != 1)}); the dice chose {decision.option}: "
            f"{decision.label}"
        )
    votes = decision.counts.get(decision.option, 0)
    return f"The audience chose {decision.option}: {decision.label} ({votes} of {total} vote{'s' * (total != 1)})"


def status_lines(status: StatusView) -> list[str]:
    turn = status.turn
    lines = [f"Story narrated by {status.narrator}" + (f" — {status.premise}" if status.premise else "")]
    if status.recap:
        lines.append(f"So far: {status.recap}")
    lines.append(f"Scene {turn.number}: {turn.narration}")
    lines.extend(choice_lines(turn, counts=True))
    if turn.status == "paused":
        lines.append("The story is paused: vote to go on.")
    elif turn.status == "closing":
        lines.append("The vote is closed; the next scene is being written.")
    elif status.seconds_left is not None:
        lines.append(f"{turn.total_votes} vote(s); the vote closes in {round(status.seconds_left)} s.")
    else:
        lines.append(
            f"{turn.total_votes} vote(s); the vote stays open until a majority or a moderator decides."
        )
    return lines
