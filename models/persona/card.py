"""Character cards: the persona format the companion-bot ecosystem shares.

A card is JSON, either loose (``*.json``) or base64-encoded inside a PNG text chunk (see ``png.py``). Three shapes
are understood:

* V2 (``"spec": "chara_card_v2"``) and V3 (``"spec": "chara_card_v3"``): the persona lives under ``data``.
* V1 ("flat"): no ``spec``, ``name``/``description``/... at the top level.

Cards in the wild are sloppy, so parsing accepts what can be understood (``character_book: null``, a single string
for ``alternate_greetings``, tags that are numbers, keys as a comma-separated string, unknown extra fields) and
refuses with a :class:`CardError` that names the file and the exact problem otherwise.

A card whose only usable field is a name is accepted: the prompt then carries just the default instruction
("You are {{char}}...") and the greeting falls back to a one-line hello. Refusing it would punish a user who is
still writing their character, and the bot stays usable.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from models.persona import png

log = logging.getLogger(__name__)

SPEC_V1: Final = "chara_card_v1"  # our label for flat cards; the format itself has no spec field
SPEC_V2: Final = "chara_card_v2"
SPEC_V3: Final = "chara_card_v3"

# PNG cards carry artwork, so they can be a few MB; anything far larger is not a card.
MAX_CARD_BYTES: Final = 32 * 1024 * 1024
# Lorebook settings come from strangers' files; clamp them to sane ranges.
MAX_SCAN_DEPTH: Final = 100
SUMMARY_EXCERPT_CHARS: Final = 300

DEFAULT_CARD_PATH: Final = pathlib.Path(__file__).resolve().parent.parent / "characters" / "default.json"


class CardError(ValueError):
    """A persona card that cannot be used; the message names the file and says what is wrong."""


@dataclass(frozen=True)
class LoreEntry:
    """One lorebook entry: text inserted into the prompt when one of its keys shows up in the chat."""

    keys: tuple[str, ...]
    content: str
    secondary_keys: tuple[str, ...] = ()
    selective: bool = False
    constant: bool = False
    enabled: bool = True
    insertion_order: int = 100
    priority: int = 10
    case_sensitive: bool = False
    position: str = "before_char"
    use_regex: bool = False
    name: str = ""


@dataclass(frozen=True)
class Lorebook:
    """A card's ``character_book``: entries plus the scan settings that govern them."""

    entries: tuple[LoreEntry, ...]
    scan_depth: int = 4
    token_budget: int = 256
    recursive_scanning: bool = False


@dataclass(frozen=True)
class Card:
    """A parsed persona card. Text fields hold the raw card text; macros are applied when used."""

    name: str
    description: str = ""
    personality: str = ""
    scenario: str = ""
    first_mes: str = ""
    mes_example: str = ""
    creator_notes: str = ""  # for humans only (``summary``); never part of a prompt
    system_prompt: str = ""
    post_history_instructions: str = ""
    alternate_greetings: tuple[str, ...] = ()
    lorebook: Lorebook | None = None
    tags: tuple[str, ...] = ()
    creator: str = ""
    character_version: str = ""
    nickname: str = ""
    spec: str = SPEC_V2
    source: str = "<dict>"

    @property
    def char_name(self) -> str:
        """The name ``{{char}}`` stands for: the V3 nickname when set, else the name."""
        return self.nickname or self.name

    def greeting(self, user: str, index: int = 0) -> str:
        """Greeting ``index`` (0 = ``first_mes``, then the alternates, wrapping around), macros applied.

        A card without any greeting gets a one-line hello, so callers always have something to post.
        """
        greetings = [g for g in (self.first_mes, *self.alternate_greetings) if g.strip()]
        if not greetings:
            return f"Hello, {user}. I'm {self.char_name}."
        return apply_macros(greetings[index % len(greetings)], char=self.char_name, user=user).strip()

    def summary(self) -> str:
        """A short, human-facing description for a ``/persona`` command (a few hundred characters)."""
        title = self.name if not self.nickname else f"{self.name} ({self.nickname})"
        if self.character_version:
            title += f" v{self.character_version}"
        lines = [title]
        if self.creator:
            lines.append(f"by {self.creator}")
        if self.tags:
            lines.append("tags: " + ", ".join(self.tags))
        about = self.description or self.personality or self.scenario
        if about:
            lines.append(_excerpt(apply_macros(about, char=self.char_name, user="you")))
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Macros and example dialogue

# `{{char}}`-style macros tolerate inner spaces; `<BOT>`/`<USER>` are the V1 spelling. One pass over the text, so a
# user called "{{char}}" is not expanded a second time.
_MACRO_RE: Final = re.compile(r"\{\{\s*(char|user|original)\s*\}\}|<(bot|user)>", re.IGNORECASE)
_START_RE: Final = re.compile(r"<\s*start\s*>", re.IGNORECASE)


def apply_macros(text: str, *, char: str, user: str, original: str = "") -> str:
    """Replace ``{{char}}``/``<BOT>``, ``{{user}}``/``<USER>`` and ``{{original}}`` (case-insensitive).

    ``original`` may itself contain ``{{char}}``/``{{user}}``; those are expanded too.
    """
    if original:
        original = apply_macros(original, char=char, user=user)

    def replace(match: re.Match[str]) -> str:
        word = (match.group(1) or match.group(2)).lower()
        if word in ("char", "bot"):
            return char
        if word == "user":
            return user
        return original

    return _MACRO_RE.sub(replace, text)


def split_examples(mes_example: str) -> list[str]:
    """Split ``mes_example`` into its ``<START>``-separated dialogue blocks (stripped, empty ones dropped)."""
    return [block.strip() for block in _START_RE.split(mes_example) if block.strip()]


# ---------------------------------------------------------------------------------------------------------------
# Loading and parsing


def default_card_path() -> pathlib.Path:
    """Path of the bundled default character card."""
    return DEFAULT_CARD_PATH


def load_card(path: str | os.PathLike[str]) -> Card:
    """Load a ``.json`` or ``.png`` card. The format is sniffed from the bytes, not trusted from the name."""
    file = pathlib.Path(path)
    source = str(file)
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_CARD_BYTES + 1)
    except OSError as exc:
        raise CardError(f"persona card {source}: cannot read file ({exc.strerror or exc})") from exc
    if len(raw) > MAX_CARD_BYTES:
        raise CardError(f"persona card {source}: file is larger than {MAX_CARD_BYTES // (1024 * 1024)} MiB")

    if png.is_png(raw):
        try:
            chunk, obj = png.read_card_json(raw)
        except png.PngCardError as exc:
            raise CardError(f"persona card {source}: {exc}") from exc
        log.debug("persona card %s: read from PNG chunk %r", source, chunk)
        return parse_card(obj, source=source)
    if file.suffix.lower() == ".png":
        raise CardError(f"persona card {source}: not a PNG file")

    try:
        text = raw.decode("utf-8-sig")  # editors on Windows like to add a BOM
    except UnicodeDecodeError as exc:
        raise CardError(f"persona card {source}: not JSON (not UTF-8 text)") from exc
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CardError(
            f"persona card {source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    return parse_card(obj, source=source)


def parse_card(obj: object, *, source: str = "<dict>") -> Card:
    """Build a :class:`Card` from decoded JSON: V2, V3 or V1 (flat)."""
    fields = _Fields(source)
    if not isinstance(obj, Mapping):
        raise CardError(f"persona card {source}: JSON is not an object (got {_type_name(obj)})")

    spec = obj.get("spec")
    if spec in (SPEC_V2, SPEC_V3):
        data = obj.get("data")
        if not isinstance(data, Mapping):
            raise CardError(f"persona card {source}: 'data' is missing or not an object")
        prefix = "data."
    elif spec is None or spec == "":
        # No spec: a flat V1 card, or a V2 body whose exporter forgot the spec line.
        nested = obj.get("data")
        if isinstance(nested, Mapping) and "name" in nested:
            data, prefix, spec = nested, "data.", SPEC_V2
        else:
            data, prefix, spec = obj, "", SPEC_V1
    else:
        raise CardError(f"persona card {source}: unsupported spec {spec!r}")
    fields.prefix = prefix

    name = fields.text(data, "name").strip()
    if not name:
        where = f"{prefix}name"
        problem = "is missing" if "name" not in data else "is empty"
        raise CardError(f"persona card {source}: {where!r} {problem}")

    return Card(
        name=name,
        description=fields.text(data, "description"),
        personality=fields.text(data, "personality"),
        scenario=fields.text(data, "scenario"),
        first_mes=fields.text(data, "first_mes"),
        mes_example=fields.text(data, "mes_example"),
        creator_notes=fields.text(data, "creator_notes"),
        system_prompt=fields.text(data, "system_prompt"),
        post_history_instructions=fields.text(data, "post_history_instructions"),
        alternate_greetings=fields.text_list(data, "alternate_greetings"),
        lorebook=_parse_lorebook(data.get("character_book"), fields),
        tags=fields.text_list(data, "tags", split_commas=True),
        creator=fields.text(data, "creator").strip(),
        character_version=fields.text(data, "character_version").strip(),
        nickname=fields.text(data, "nickname").strip() if spec == SPEC_V3 else "",
        spec=str(spec),
        source=source,
    )


def _parse_lorebook(book: object, fields: _Fields) -> Lorebook | None:
    """Parse ``character_book``; ``None`` when absent, null or without a usable entry."""
    if book is None:
        return None
    if not isinstance(book, Mapping):
        raise CardError(f"persona card {fields.source}: {fields.prefix}character_book is not an object")
    raw_entries = book.get("entries") or []
    # SillyTavern's world-info export keys entries by uid instead of listing them.
    if isinstance(raw_entries, Mapping):
        raw_entries = list(raw_entries.values())
    if not isinstance(raw_entries, list):
        raise CardError(f"persona card {fields.source}: {fields.prefix}character_book.entries is not a list")

    entries: list[LoreEntry] = []
    for number, raw in enumerate(raw_entries):
        entry = _parse_entry(raw)
        if entry is None:
            log.warning("persona card %s: lorebook entry %d skipped (no content)", fields.source, number)
        else:
            entries.append(entry)
    if not entries:
        return None
    return Lorebook(
        entries=tuple(entries),
        scan_depth=min(max(_as_int(book.get("scan_depth"), 4), 0), MAX_SCAN_DEPTH),
        token_budget=max(_as_int(book.get("token_budget"), 256), 0),
        recursive_scanning=_as_bool(book.get("recursive_scanning"), False),
    )


def _parse_entry(raw: object) -> LoreEntry | None:
    """One lorebook entry, or ``None`` when it has nothing to insert."""
    if not isinstance(raw, Mapping):
        return None
    content = _scalar_text(raw.get("content"))
    if content is None or not content.strip():
        return None
    position = raw.get("position")
    # V2 uses names; SillyTavern's extension uses 0 (before) and 1 (after).
    if position in ("after_char", 1):
        position = "after_char"
    else:
        position = "before_char"
    return LoreEntry(
        keys=_keys(raw.get("keys", raw.get("key"))),
        content=_normalize(content).strip(),
        secondary_keys=_keys(raw.get("secondary_keys", raw.get("keysecondary"))),
        selective=_as_bool(raw.get("selective"), False),
        constant=_as_bool(raw.get("constant"), False),
        enabled=_as_bool(raw.get("enabled"), True) and not _as_bool(raw.get("disable"), False),
        insertion_order=_as_int(raw.get("insertion_order", raw.get("order")), 100),
        priority=_as_int(raw.get("priority"), 10),
        case_sensitive=_as_bool(raw.get("case_sensitive"), False),
        position=position,
        use_regex=_as_bool(raw.get("use_regex"), False),
        name=(_scalar_text(raw.get("name", raw.get("comment"))) or "").strip(),
    )


# ---------------------------------------------------------------------------------------------------------------
# Lenient field readers


class _Fields:
    """Reads fields of one card, naming the card and the field path in every error."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.prefix = ""

    def text(self, data: Mapping[str, Any], key: str) -> str:
        """A text field: missing or null is empty, numbers become text, anything else is an error."""
        value = data.get(key)
        text = _scalar_text(value)
        if text is None:
            raise CardError(
                f"persona card {self.source}: '{self.prefix}{key}' must be text, not {_type_name(value)}"
            )
        return _normalize(text)

    def text_list(self, data: Mapping[str, Any], key: str, *, split_commas: bool = False) -> tuple[str, ...]:
        """A list of texts; a single string is one item (or comma-separated items), non-text items are dropped."""
        value = data.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            items: Sequence[object] = value.split(",") if split_commas else [value]
        elif isinstance(value, list):
            items = value
        else:
            raise CardError(
                f"persona card {self.source}: '{self.prefix}{key}' must be a list, not {_type_name(value)}"
            )
        texts = (_scalar_text(item) for item in items)
        return tuple(_normalize(t).strip() for t in texts if t is not None and t.strip())


def _scalar_text(value: object) -> str | None:
    """Text for a string, number or null (``""``); ``None`` for containers, which cannot be text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def _keys(value: object) -> tuple[str, ...]:
    """Lore keys from a list or a comma-separated string; blanks dropped."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        return ()
    keys = (_scalar_text(item) for item in value)
    return tuple(k.strip() for k in keys if k is not None and k.strip())


def _as_int(value: object, default: int) -> int:
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value.strip()))
        except ValueError:
            return default
    return default


def _as_bool(value: object, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off", ""):
            return False
    return default


def _normalize(text: str) -> str:
    """Windows line endings leak into prompts as stray characters; unify them."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= SUMMARY_EXCERPT_CHARS:
        return flat
    return flat[: SUMMARY_EXCERPT_CHARS - 1].rsplit(" ", 1)[0] + "…"


def _type_name(value: object) -> str:
    """JSON's name for a decoded value's type, for error messages a card author understands."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__
