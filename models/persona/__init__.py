"""Persona cards (Character Card V1/V2/V3, JSON or PNG) and lorebook activation.

Typical use::

    card = load_card(default_card_path())
    lore = active_lore(card.lorebook, recent_texts, count_tokens) if card.lorebook else []
"""

from models.persona.card import (
    Card,
    CardError,
    Lorebook,
    LoreEntry,
    apply_macros,
    default_card_path,
    load_card,
    parse_card,
    split_examples,
)
from models.persona.lorebook import active_lore
from models.persona.png import write_png_card

__all__ = [
    "Card",
    "CardError",
    "LoreEntry",
    "Lorebook",
    "active_lore",
    "apply_macros",
    "default_card_path",
    "load_card",
    "parse_card",
    "split_examples",
    "write_png_card",
]
