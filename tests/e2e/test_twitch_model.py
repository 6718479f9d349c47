"""The real embedded model behind Twitch chat: a mention gets an in-character reply within Twitch's limits."""

from __future__ import annotations

import pytest

from bot.runtime import open_runtime
from tests.e2e.twitch_harness import running_twitch, twitch_config

pytestmark = pytest.mark.slow


async def test_mention_gets_an_in_character_reply_from_the_model(fake_twitch, tmp_path, engine):
    config = twitch_config(str(tmp_path / "data"), generation={"temperature": 0.0, "max_new_tokens": 48})
    async with open_runtime(config, backend=engine) as runtime, running_twitch(runtime, fake_twitch):
        asked = await fake_twitch.send_chat("@wickbot hello! who are you?", login="viewer", user_id="801")
        (sent,) = await fake_twitch.wait_sent(1, within=120)
    assert sent.reply_parent_message_id == asked
    assert 0 < len(sent.message) <= 500
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "User:", "SmolLM"):
        assert token not in sent.message
