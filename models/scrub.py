"""Remove personal data from chat text before it becomes training data.

What goes: e-mail addresses, phone numbers, links and invites, token-like strings (API keys, bot tokens, long hex
or base64 runs) and platform mentions, which become the mentioned person's name (or "someone" when unknown).
Each is replaced by a short placeholder so the sentence still reads naturally to the model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final

EMAIL: Final = "[email]"
PHONE: Final = "[phone]"
LINK: Final = "[link]"
INVITE: Final = "[invite]"
SECRET: Final = "[secret]"
UNKNOWN_MENTION: Final = "someone"

_USER_MENTION = re.compile(r"<@!?(\d{5,25})>")
_ROLE_MENTION = re.compile(r"<@&\d{5,25}>")
_CHANNEL_MENTION = re.compile(r"<#\d{5,25}>")
_CUSTOM_EMOJI = re.compile(r"<a?:(\w{2,32}):\d{5,25}>")
_INVITE = re.compile(
    r"(?:https?://)?(?:www\.)?(?:discord(?:app)?\.com/invite|discord\.gg|twitch\.tv/\w+/invite)/[\w-]+", re.I
)
_URL = re.compile(
    r"(?:https?://|www\.)[^\s<>\"']+|\b[\w-]+(?:\.[\w-]+)*\.(?:com|net|org|io|gg|tv|me|co|dev|xyz)/\S*", re.I
)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}\b", re.I)
# A phone number: optional +country code, then 7-15 digits with the usual separators; at least 7 digits in all.
_PHONE = re.compile(r"(?<![\w.])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d(?:[\s.-]?\d){6,14}(?![\w.])")
# Discord bot tokens: three base64url parts separated by dots.
_DISCORD_TOKEN = re.compile(r"\b[\w-]{23,28}\.[\w-]{6,7}\.[\w-]{27,40}\b")
# Common API key shapes (OpenAI sk-, GitHub ghp_/gho_, Slack xox*, AWS AKIA, Twitch oauth:).
_KEY_PREFIXED = re.compile(
    r"\b(?:sk-[\w-]{16,}|gh[pousr]_\w{20,}|xox[abpr]-[\w-]{10,}|AKIA[0-9A-Z]{16}|oauth:\w{20,})"
)
# Any long run of letters+digits (hex, base64) with both letters and digits: hashes, keys, session ids.
_LONG_RUN = re.compile(r"\b[A-Za-z0-9_+/=-]{24,}\b")


def _looks_secret(run: str) -> bool:
    has_digit = any(c.isdigit() for c in run)
    has_alpha = any(c.isalpha() for c in run)
    return has_digit and has_alpha


def scrub(text: str, names: Mapping[str, str] | Callable[[str], str | None] | None = None) -> str:
    """Return ``text`` with personal data replaced; ``names`` maps user ids to display names for mentions."""

    def name_of(match: re.Match[str]) -> str:
        user_id = match.group(1)
        found = names(user_id) if callable(names) else (names or {}).get(user_id)
        return "@" + (found or UNKNOWN_MENTION)

    text = _USER_MENTION.sub(name_of, text)
    text = _ROLE_MENTION.sub("@role", text)
    text = _CHANNEL_MENTION.sub("#channel", text)
    text = _CUSTOM_EMOJI.sub(r":\1:", text)
    # Order matters: keys and invites before generic links, e-mails before phones (digits in addresses).
    text = _DISCORD_TOKEN.sub(SECRET, text)
    text = _KEY_PREFIXED.sub(SECRET, text)
    text = _INVITE.sub(INVITE, text)
    text = _URL.sub(LINK, text)
    text = _EMAIL.sub(EMAIL, text)
    text = _LONG_RUN.sub(lambda m: SECRET if _looks_secret(m.group(0)) else m.group(0), text)
    text = _PHONE.sub(PHONE, text)
    return text
