"""Moderation core: checks what the character says (and what people ask it to repeat) before it is posted.

Platform-free: `Moderator(settings).check(text)` returns a `Verdict`; the platforms decide what to do with a held
text. `clean_people_text` is the one cleaning for people's text the bot repeats (poll options, story write-ins).
See docs/safety.md.
"""

from __future__ import annotations

from models.moderation.moderator import Moderator
from models.moderation.people_text import clean_people_text
from models.moderation.settings import SafetySettings
from models.moderation.verdict import Verdict

__all__ = ["Moderator", "SafetySettings", "Verdict", "clean_people_text"]
