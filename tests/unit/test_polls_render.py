"""How results look (chart, chat lines, embeds) and how live updates are coalesced."""

import asyncio
import io
import re

from PIL import Image

from cogs.common.coalesce import Coalescer
from cogs.polls.announce import Announcement, template_announcement
from cogs.polls.chart import render_chart
from cogs.polls.discord_cog import CUSTOM_ID_TEMPLATE, poll_buttons, poll_embed
from cogs.polls.model import Display, Poll, PollStatus
from cogs.polls.results import Results
from cogs.polls.twitch_component import ack_line, closed_line, poll_announcement


def make_poll(options=("chess", "go"), *, status=PollStatus.OPEN, question="Game?", displays=()):
    return Poll(
        id=3,
        question=question,
        options=tuple(options),
        multi=False,
        creator_platform="twitch",
        creator_id="1",
        creator_name="mod",
        created_at=1000.0,
        closes_at=1120.0,
        status=status,
        displays=tuple(displays),
    )


def test_chart_is_a_png_with_a_row_per_option_and_survives_unicode():
    options = ["寿司 🍣", "pizza", "x" * 55, "Ünïcödé", "5", "6", "7", "8", "9", "10"]
    results = Results(
        poll=make_poll(options, status=PollStatus.CLOSED, question="¿Qué? " * 50),
        counts=tuple(range(10)),
        voters=45,
    )
    image = Image.open(io.BytesIO(render_chart(results)))
    assert image.format == "PNG" and image.width == 800
    small = Image.open(io.BytesIO(render_chart(Results(poll=make_poll(), counts=(0, 0), voters=0))))
    assert small.height < image.height


def test_template_announcement_says_winner_tie_or_nobody():
    closed = make_poll(status=PollStatus.CLOSED)
    assert template_announcement(Results(poll=closed, counts=(2, 1), voters=3)) == (
        "The poll “Game?” is closed! “chess” wins with 2 votes (67%)."
    )
    assert "tie" in template_announcement(Results(poll=closed, counts=(1, 1), voters=2))
    assert "Nobody voted" in template_announcement(Results(poll=closed, counts=(0, 0), voters=0))


def test_twitch_lines_fit_500_characters():
    poll = make_poll([f"{i}" * 55 for i in range(10)], status=PollStatus.CLOSED, question="q" * 300)
    results = Results(poll=poll, counts=tuple(range(10)), voters=45)
    line = closed_line(results, Announcement("w" * 300, in_character=True), character="Wick")
    assert len(line) <= 500 and line.startswith("Wick: www")
    assert len(poll_announcement(poll)) <= 500
    acks = ack_line([f"@user{i} 1. chess" for i in range(50)], 7, "live: chess 40 · go 17")
    assert "(+45 more)" in acks and len(acks) < 500


async def test_discord_embed_and_buttons():
    poll = make_poll(displays=[Display("discord", "5", "9"), Display("twitch", "streamer")])
    embed = poll_embed(
        Results(poll=poll, counts=(3, 1), voters=4, by_platform=(("discord", 1), ("twitch", 3)))
    )
    assert embed.title == "📊 Poll #3 (open)"
    assert [f.name for f in embed.fields] == ["1. chess", "2. go"]
    assert "**3** (75%)" in embed.fields[0].value
    assert "<t:1120:R>" in embed.description
    assert "also on Twitch (Discord 1, Twitch 3)" in embed.footer.text
    view = poll_buttons(poll)
    ids = [item.custom_id for item in view.children]
    assert ids == ["familiar:poll:3:1", "familiar:poll:3:2"]
    assert all(re.fullmatch(CUSTOM_ID_TEMPLATE, i) for i in ids)
    assert view.is_finished()  # a template: discord.py keeps no per-message state
    closed = poll_embed(Results(poll=make_poll(status=PollStatus.CLOSED), counts=(1, 1), voters=2))
    assert "tie" in closed.description


async def test_coalescer_folds_marks_into_one_trailing_run():
    runs = []
    gate = asyncio.Event()

    async def action(key):
        runs.append(key)
        await gate.wait()

    coalescer = Coalescer(action, interval_s=0.05)
    coalescer.mark("p1")  # acts at once
    await asyncio.sleep(0)
    for _ in range(100):
        coalescer.mark("p1")  # all of these fold into one more run
    coalescer.mark("p2")
    gate.set()
    await coalescer.flush()
    assert runs.count("p1") == 2 and runs.count("p2") == 1
    coalescer.mark("p1")
    coalescer.forget("p1")
    await coalescer.flush()
    assert runs.count("p1") == 2
    await coalescer.close()
