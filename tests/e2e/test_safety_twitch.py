"""Safety on Twitch end to end: the real twitchio client against the fake Twitch. A reply our moderator holds, or
that Twitch AutoMod would not permit, is never posted: the deflection goes out instead, the bot keeps answering,
and the held text is on the dashboard's data."""

from __future__ import annotations

from typing import Any

from bot.config import config_from_dict
from bot.dashboard.data import DashboardData
from bot.runtime import open_runtime
from cogs.common.safety import default_deflection
from tests.e2e.twitch_harness import running_twitch, wait_for_line
from tests.fakes import ScriptedBackend

BOT_TOKEN = "fake-bot-token-0123456789"


def safety_config(data_dir: str, channel: str, **safety: Any) -> Any:
    raw = {
        "bot": {"data_dir": data_dir},
        "chat": {"cooldown_s": 0.0},
        "twitch": {"enabled": True, "channels": [channel]},
        "safety": {"blocked_terms": ["frobnicate"], **safety},
    }
    return config_from_dict(raw, source="<test>")


async def test_automod_held_reply_becomes_the_deflection(fake_twitch, tmp_path):
    fake_twitch.tokens[BOT_TOKEN]["scopes"].append("moderation:read")
    fake_twitch.automod_holds = ["pineapple"]
    own = fake_twitch.bot  # Twitch checks AutoMod only with the broadcaster's token: the bot's own channel
    config = safety_config(str(tmp_path / "data"), own.login, twitch_automod_check=True)
    backend = ScriptedBackend(["I adore pineapple on pizza.", "Candles, mostly."])
    async with open_runtime(config, backend=backend) as runtime, running_twitch(runtime, fake_twitch):
        deflection = default_deflection(runtime.card.char_name)
        asked = await fake_twitch.send_chat("@wickbot favourite pizza?", channel=own, user_id="501")
        sent = await wait_for_line(fake_twitch, lambda text: text == deflection)
        assert sent.reply_parent_message_id == asked
        assert [text for _, text, ok in fake_twitch.automod_checks if not ok] == [
            "I adore pineapple on pizza."
        ]
        # Still answering.
        await fake_twitch.send_chat("@wickbot what do you like?", channel=own, user_id="502", login="bo")
        await wait_for_line(fake_twitch, lambda text: text == "Candles, mostly.")
        assert not any("pineapple" in s.message for s in fake_twitch.sent)
        held = await DashboardData(runtime.store).held()
        assert [(h.kind, h.text, h.source) for h in held] == [
            ("reply", "I adore pineapple on pizza.", "twitch-automod")
        ]
        await runtime.store.flush()
        rows = await runtime.log.recent(f"twitch:{own.login}", 10)
        assert [(r.role, bool(r.held)) for r in rows] == [
            ("user", True),  # its reply was held: never learnt
            ("user", False),
            ("assistant", False),
        ]
        assert "pineapple" not in " ".join(r.content for r in rows)


async def test_automod_check_is_skipped_where_twitch_refuses_it(fake_twitch, tmp_path):
    fake_twitch.tokens[BOT_TOKEN]["scopes"].append("moderation:read")
    fake_twitch.automod_holds = ["pineapple"]
    config = safety_config(str(tmp_path / "data"), "streamer", twitch_automod_check=True)
    backend = ScriptedBackend(["Pineapple belongs on pizza.", "Still here."])
    async with open_runtime(config, backend=backend) as runtime, running_twitch(runtime, fake_twitch):
        await fake_twitch.send_chat("@wickbot pizza?")
        await wait_for_line(fake_twitch, lambda text: text == "Pineapple belongs on pizza.")
        await fake_twitch.send_chat("@wickbot hello", user_id="502", login="bo")
        await wait_for_line(fake_twitch, lambda text: text == "Still here.")
        # Twitch answered 403 (not the broadcaster's token) once; the channel is not asked again.
        assert fake_twitch.requests.count(("POST", "/helix/moderation/enforcements/status")) == 1


async def test_reply_held_by_our_moderator_is_never_posted(fake_twitch, tmp_path):
    config = safety_config(str(tmp_path / "data"), "streamer")
    backend = ScriptedBackend(["You frobnicate!", "Frobnicate, I said.", "Hello, Bo."])
    async with open_runtime(config, backend=backend) as runtime, running_twitch(runtime, fake_twitch):
        deflection = default_deflection(runtime.card.char_name)
        await fake_twitch.send_chat("@wickbot say something rude")
        await wait_for_line(fake_twitch, lambda text: text == deflection)
        # A flagged message gets nothing at all (on_flagged_input = "ignore"), and the bot keeps running.
        await fake_twitch.send_chat("@wickbot you frobnicate", user_id="503", login="cy")
        await fake_twitch.send_chat("@wickbot hi!", user_id="502", login="bo")
        await wait_for_line(fake_twitch, lambda text: text == "Hello, Bo.")
        assert [s.message for s in fake_twitch.sent] == [deflection, "Hello, Bo."]
        held = await DashboardData(runtime.store).held()
        assert [(h.kind, h.text) for h in reversed(held)] == [
            ("reply", "You frobnicate!"),
            ("reply", "Frobnicate, I said."),
            ("input", "you frobnicate"),
        ]


async def test_safety_command_for_moderators_never_repeats_held_words(fake_twitch, tmp_path):
    config = safety_config(str(tmp_path / "data"), "streamer")
    backend = ScriptedBackend(["You frobnicate!", "Nice day, Ada."])
    async with open_runtime(config, backend=backend) as runtime, running_twitch(runtime, fake_twitch):
        await fake_twitch.send_chat("@wickbot hi")
        await wait_for_line(fake_twitch, lambda text: text == "Nice day, Ada.")
        await fake_twitch.send_chat("!safety block zorblax", user_id="504", login="dee")
        await wait_for_line(fake_twitch, lambda text: text == "Only moderators can add blocked words.")
        await fake_twitch.send_chat("!safety block zorblax", user_id="505", login="mo", badges=["moderator"])
        await wait_for_line(fake_twitch, lambda text: text.startswith("Added to the blocked words"))
        assert not runtime.safety.verdict("a zorblax").allowed
        await fake_twitch.send_chat("!safety", user_id="505", login="mo", badges=["moderator"])
        held = await wait_for_line(fake_twitch, lambda text: text.startswith("Last 1 held"))
        await wait_for_line(fake_twitch, lambda text: text.startswith("Rules:"))
        assert "frobnicate" not in held.message.lower() and "held by rules" in held.message
        assert not any("zorblax" in s.message for s in fake_twitch.sent)
