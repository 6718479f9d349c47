"""Turn raw model output into a message fit to post, and fit messages into platform limits.

A small model leaks chat-format tokens, prefixes its reply with its own name, and carries on writing the other
side of the conversation ("User: ..."). :func:`clean_reply` removes all of that; :func:`trim_to_limit` and
:func:`split_message` make the result fit Twitch's 500 and Discord's 2000 characters without cutting mid-word.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

ELLIPSIS = "…"
# trim_to_limit keeps a sentence boundary only if it keeps at least this share of the limit; otherwise a
# word-boundary cut with an ellipsis loses less text.
MIN_SENTENCE_CUT_FRACTION = 0.3
# split_message prefers a paragraph, line, sentence, then word boundary, each only if the chunk stays this full.
MIN_SPLIT_FRACTION = 0.5

# Said when the model produced nothing usable twice; neutral so they fit any character.
FALLBACK_REPLIES: tuple[str, ...] = (
    "Hmm, give me a moment to gather my thoughts.",
    "Sorry, I lost my train of thought there. Could you say that again?",
    "Let me think about that for a second.",
    "I'm not sure what to say to that. Tell me more?",
    "Hold on, my mind wandered off. What were we talking about?",
)

# Chat-format tokens (ChatML and friends). Anything after one of these in a reply belongs to another turn.
_TURN_TOKEN = re.compile(r"<\|(?:im_start|im_end|endoftext|eot_id|end|user|assistant|system)\|>|</s>")
# Role headers a template can leave at the very start ("<|im_start|>assistant\n", or just "assistant\n").
_LEADING_ROLE = re.compile(r"^\s*(?:<\|im_start\|>\s*)?(?:assistant|model)[ \t]*(?:\n|:)", re.IGNORECASE)
_LEADING_TURN_TOKENS = re.compile(
    r"^(?:\s*(?:<\|(?:im_start|im_end|endoftext|eot_id|end|assistant)\|>|</s>))+"
)
# Speaker labels that mean the model started writing someone else's turn (or a new scene header).
_GENERIC_SPEAKERS = (
    "user", "you", "human", "me", "assistant", "ai", "bot", "system", "narrator", "anon", "anonymous",
    "{{user}}", "{{char}}", "<user>", "<bot>",
)  # fmt: skip
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’»)\]*_~]*(?=\s|$)")
_CLOSING_CHARS = frozenset(".!?…\"'”’»)]*_~`")


def _speaker_label(names: Sequence[str]) -> re.Pattern[str]:
    """Regex for a line that opens with ``Name:`` (optionally bold, @-mentioned or bracketed)."""
    alternatives = "|".join(
        re.escape(n) for n in sorted({n.strip() for n in names if n.strip()}, key=len, reverse=True)
    )
    return re.compile(
        rf"^[ \t]*(?:\*\*|__|\[|@)?(?:{alternatives})(?:\*\*|__|\])?[ \t]*(?:\*\*)?:(?:\*\*|__)?",
        re.IGNORECASE,
    )


def _cut_at_invented_turn(text: str, names: Sequence[str]) -> str:
    """Keep text up to the first line that starts another speaker's turn or a markdown heading."""
    label = _speaker_label(names)
    kept: list[str] = []
    for index, line in enumerate(text.split("\n")):
        if label.match(line) or line.lstrip().startswith("###"):
            break
        if index > 0 and line.strip() in {"---", "***"}:  # a scene break: whatever follows is not this reply
            break
        kept.append(line)
    return "\n".join(kept)


def _collapse_whitespace(text: str) -> str:
    """Single spaces inside lines, no trailing spaces, at most one blank line between paragraphs."""
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _ends_complete(text: str) -> bool:
    """Whether the text ends like a finished thought: terminal punctuation, a closing mark, or an emoji."""
    last = text[-1]
    return last in _CLOSING_CHARS or unicodedata.category(last) == "So"


def _drop_dangling(text: str) -> str:
    """Remove an unfinished last sentence, but only when a complete sentence comes before it."""
    if not text or _ends_complete(text):
        return text
    ends = list(_SENTENCE_END.finditer(text))
    if not ends:
        return text
    return text[: ends[-1].end()].rstrip()


def _usable(text: str) -> bool:
    """True if the text contains at least one letter, digit or symbol (not only punctuation and spaces)."""
    return any(unicodedata.category(ch)[0] in "LNS" for ch in text)


def clean_reply(
    text: str, *, char_name: str, other_names: Sequence[str] = (), drop_dangling: bool = True
) -> str:
    """Return the part of raw model output that is ``char_name``'s reply, tidied; ``""`` if none is usable.

    ``other_names`` are the other participants (users in the conversation); a line starting with one of them
    followed by a colon is the model inventing their turn. Set ``drop_dangling=False`` when the generation ended
    on its own (finish_reason "stop"), so a short reply without final punctuation is not trimmed.
    """
    # 1. Role tokens: drop the ones leading the reply, then cut at the first one left (it opens another turn).
    text = _LEADING_TURN_TOKENS.sub("", text)
    text = _LEADING_ROLE.sub("", text, count=1)
    match = _TURN_TOKEN.search(text)
    if match:
        text = text[: match.start()]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # 2. The character's own name as a speaker label at the start ("Mira: Hello!") is redundant.
    own_label = _speaker_label([char_name]) if char_name.strip() else None
    if own_label is not None:
        text = own_label.sub("", text.lstrip(), count=1)
    # 3. Cut where the model starts writing another turn, including a new one by the character itself.
    speakers = [*_GENERIC_SPEAKERS, *other_names, char_name]
    text = _cut_at_invented_turn(text, speakers)
    # 4. Tidy whitespace, then drop an unfinished trailing sentence (typical when max_new_tokens ran out).
    text = _collapse_whitespace(text)
    if drop_dangling:
        text = _drop_dangling(text)
    return text if _usable(text) else ""


def _last_sentence_end(text: str) -> int:
    """Index just after the last sentence end in ``text``, or 0 if there is none."""
    ends = list(_SENTENCE_END.finditer(text))
    return ends[-1].end() if ends else 0


def trim_to_limit(text: str, limit: int) -> str:
    """Shorten ``text`` to at most ``limit`` characters, at a sentence boundary if a good one exists.

    Otherwise cut at the last word boundary and append "…" (the result still fits in ``limit``).
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    text = text.strip()
    if len(text) <= limit:
        return text
    window = text[:limit]
    # A sentence end is only a boundary if the next character is whitespace (or the text ends there).
    boundary = _last_sentence_end(window if text[limit].isspace() else window + "\x00")
    if boundary >= limit * MIN_SENTENCE_CUT_FRACTION:
        return window[:boundary].rstrip()
    room = text[: limit - len(ELLIPSIS)]  # leave space for the ellipsis
    if text[len(room)].isspace():  # the room ends exactly at a word end
        head = room
    else:
        space = _last_space(room, len(room))
        head = room[:space] if space > 0 else room  # a single huge word: hard cut
    head = head.rstrip(" ,;:-–—\n\t") or room
    return head + ELLIPSIS


def _last_space(text: str, end: int) -> int:
    """Index of the last whitespace character before ``end`` (index 0 excluded), or -1."""
    for index in range(min(end, len(text)) - 1, 0, -1):
        if text[index].isspace():
            return index
    return -1


def _split_point(text: str, limit: int) -> int:
    """Where to end the next chunk of ``text`` (longer than ``limit``): the most natural boundary that fits."""
    window = text[: limit + 1]  # one more char so a boundary right at the limit is seen
    floor = int(limit * MIN_SPLIT_FRACTION)
    for separator in ("\n\n", "\n"):
        at = window.rfind(separator, 0, limit)
        if at >= floor:
            return at
    ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() <= limit]
    if ends and ends[-1] >= floor:
        return ends[-1]
    at = _last_space(window, limit + 1)
    if at > 0:
        return at
    return limit  # one very long word: a hard cut is the only option


def split_message(text: str, limit: int) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters at paragraph/line/sentence/word boundaries.

    Only whitespace at the cut points is dropped; joining the chunks with spaces keeps every other character.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    chunks: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = max(1, _split_point(rest, limit))
        chunk = rest[:cut].rstrip()
        if chunk:
            chunks.append(chunk)
        rest = rest[cut:].lstrip()
    if rest:
        chunks.append(rest)
    return chunks
