"""Twitch adapters' pure parts: rights from badges, what counts as a message for the bot, credentials."""

from __future__ import annotations

import pytest

from bot.config import TwitchConfig
from bot.platforms.twitch.rights import actor_from_badges, is_elevated
from bot.platforms.twitch.tokens import TwitchCredentialsError, read_credentials
from cogs.chat.twitch_component import conversation_id, directed_text


@pytest.mark.parametrize(
    ("badges", "moderator", "admin"),
    [
        ([], False, False),
        (["subscriber", "vip"], False, False),
        (["moderator"], True, False),
        (["lead_moderator"], True, False),
        (["broadcaster", "subscriber"], True, True),
    ],
)
def test_actor_from_badges(badges, moderator, admin):
    actor = actor_from_badges("42", "Viewer", badges)
    assert (actor.platform, actor.user_id, actor.name) == ("twitch", "42", "Viewer")
    assert (actor.is_moderator, actor.is_admin) == (moderator, admin)
    assert is_elevated(badges) == moderator


def _directed(text: str, **kw):
    options = {"bot_login": "wickbot", "command": "!ask", "answer_mentions": True, "char_name": "Wick"}
    return directed_text(text, **(options | kw))


def test_directed_text():
    assert _directed("!ask what now?") == "what now?"
    assert _directed("!ASK   spaced  ") == "spaced"
    assert _directed("!ask") == ""
    assert _directed("!askme what") is None
    assert _directed("@wickbot, hi there") == "hi there"
    assert _directed("@WickBot: hi") == "hi"
    assert _directed("so @wickbot how are you") == "so Wick how are you"
    assert _directed("@wickbotfan hi") is None
    assert _directed("talking about wickbot") is None
    assert _directed("hello", mentioned=True) == "hello"
    assert _directed("@wickbot hi", answer_mentions=False) is None
    assert _directed("!ask hi", command="") is None
    assert conversation_id("StreamER") == "twitch:streamer"


def test_read_credentials_names_missing_variables_and_hides_values():
    env = {
        "TWITCH_CLIENT_ID": "cid",
        "TWITCH_CLIENT_SECRET": "very-secret",
        "TWITCH_BOT_ID": "123",
        "TWITCH_BOT_TOKEN": "oauth:tok-secret",
        "TWITCH_BOT_REFRESH_TOKEN": "ref-secret",
    }
    creds = read_credentials(TwitchConfig(), env)
    assert creds.token == "tok-secret"
    for secret in ("very-secret", "tok-secret", "ref-secret"):
        assert secret not in repr(creds) and secret not in creds.fingerprint
    with pytest.raises(TwitchCredentialsError, match="TWITCH_CLIENT_SECRET, TWITCH_BOT_TOKEN"):
        read_credentials(TwitchConfig(), {**env, "TWITCH_CLIENT_SECRET": "", "TWITCH_BOT_TOKEN": " "})
    with pytest.raises(TwitchCredentialsError, match="numeric"):
        read_credentials(TwitchConfig(), {**env, "TWITCH_BOT_ID": "wickbot"})
    renamed = TwitchConfig(bot_token_env="MY_TOKEN")
    with pytest.raises(TwitchCredentialsError, match="MY_TOKEN"):
        read_credentials(renamed, env)
