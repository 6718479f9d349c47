"""A horizontal bar chart of a poll's results as PNG bytes (Pillow), for Discord attachments."""

from __future__ import annotations

import io
import logging
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from cogs.polls.results import Results

log = logging.getLogger(__name__)

WIDTH = 800
ROW_HEIGHT = 44
MARGIN = 20
HEADER_HEIGHT = 56
LABEL_WIDTH = 300
BACKGROUND = (47, 49, 54)
TEXT = (235, 235, 235)
MUTED = (150, 153, 160)
BAR = (88, 101, 242)
WINNER_BAR = (87, 242, 135)
TRACK = (64, 68, 75)
MAX_TITLE_CHARS = 70
MAX_LABEL_CHARS = 30

# Fonts with wide Unicode coverage that are commonly installed; Pillow's bundled font is the last resort.
_FONT_CANDIDATES = (
    "DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "Arial.ttf",
)


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in _FONT_CANDIDATES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_chart(results: Results) -> bytes:
    """PNG bytes: the question, then one bar per option with its count and percentage; winners in green."""
    poll = results.poll
    n = len(poll.options)
    height = HEADER_HEIGHT + n * ROW_HEIGHT + MARGIN
    image = Image.new("RGB", (WIDTH, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    title_font, label_font, small = _font(22), _font(18), _font(15)

    draw.text((MARGIN, 14), _fit(poll.question, MAX_TITLE_CHARS), font=title_font, fill=TEXT)
    top = max(results.counts) if results.counts else 0
    winners = set(results.winners) if results.final else set()
    bar_left = MARGIN + LABEL_WIDTH
    bar_max = WIDTH - bar_left - MARGIN - 120  # room for "1234 (100%)"
    for i, (label, count, pct) in enumerate(
        zip(poll.options, results.counts, results.percentages, strict=True)
    ):
        y = HEADER_HEIGHT + i * ROW_HEIGHT
        draw.text((MARGIN, y + 10), _fit(f"{i + 1}. {label}", MAX_LABEL_CHARS), font=label_font, fill=TEXT)
        draw.rounded_rectangle(
            (bar_left, y + 8, bar_left + bar_max, y + ROW_HEIGHT - 8), radius=6, fill=TRACK
        )
        if count:
            length = max(8, round(bar_max * count / top))
            colour = WINNER_BAR if (i + 1) in winners else BAR
            draw.rounded_rectangle(
                (bar_left, y + 8, bar_left + length, y + ROW_HEIGHT - 8), radius=6, fill=colour
            )
        draw.text((bar_left + bar_max + 10, y + 12), f"{count} ({pct:.0f}%)", font=small, fill=MUTED)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
