"""Fixtures for the end-to-end tests: fake platform servers the real client libraries talk to."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.discord_harness import pointed_at
from tests.e2e.fake_discord import FakeDiscord
from tests.e2e.fake_twitch import FakeTwitch
from tests.e2e.twitch_harness import credentials_env
from tests.e2e.twitch_harness import pointed_at as twitch_pointed_at


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A fake Discord on 127.0.0.1 with discord.py pointed at it for the test's duration."""
    fake = FakeDiscord()
    await fake.start()
    with pointed_at(fake):
        yield fake
    await fake.close()


# ---------------------------------------------------------------------------------------------- Twitch


@pytest.fixture
async def fake_twitch(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeTwitch]:
    """A fake Twitch on 127.0.0.1, twitchio pointed at it and its credentials in the environment."""
    fake = FakeTwitch()
    await fake.start()
    credentials_env(fake, monkeypatch)
    with twitch_pointed_at(fake):
        yield fake
    await fake.close()
