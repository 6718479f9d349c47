"""The real embedded model behind the real discord.py client: a mention gets an in-character reply, safely sent."""

from __future__ import annotations

import pytest

from bot.runtime import open_runtime
from tests.e2e.discord_harness import discord_config, running_bot
from tests.e2e.fake_discord import GENERAL_ID

pytestmark = pytest.mark.slow


async def test_mention_answered_in_character_by_the_model(fake_discord, engine, tmp_path):
    config = discord_config(str(tmp_path / "data"))
    config = type(config)(
        **{**config.__dict__, "generation": type(config.generation)(temperature=0.0, max_new_tokens=40)}
    )
    async with open_runtime(config, backend=engine) as runtime, running_bot(runtime, fake_discord):
        await fake_discord.user_message("Hello! Who are you?", mention_bot=True)
        await fake_discord.slash("chat", {"message": "What do you like?"})
        sent = await fake_discord.wait_for_sent(
            lambda m: m["kind"] in ("channel", "followup"), count=2, within=120
        )
        for msg in sent:
            text = msg["content"]
            assert text.strip() and len(text) <= 2000
            assert msg["allowed_mentions"]["parse"] == []
            for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "User:", "SmolLM"):
                assert token not in text
        assert {m["channel_id"] for m in sent} == {str(GENERAL_ID)}
        await runtime.store.flush()
        rows = await runtime.log.recent(f"discord:{GENERAL_ID}", 10)
        assert sorted(r.role for r in rows) == ["assistant", "assistant", "user", "user"]
        assert all(r.model_version for r in rows if r.role == "assistant")
