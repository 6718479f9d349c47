"""`/forget` in the middle of a story vote, end to end in the console: the app's commands over a real runtime.

The narrator is scripted (no model): what is tested is the vote, the forget and the database, not the narration.
"""

from __future__ import annotations

import sqlite3

from tests.e2e.story_support import Narrator, story_runtime
from tests.e2e.test_polls_console import run_console
from tests.unit.test_story_forget import ANN, held
from tests.unit.test_story_service import CHANNEL, HOST

SCENE = "The old mill turns in the wind, part {n}.\n1. Go inside\n2. Follow the stream\n3. Wait"
OPEN = "1 vote(s); the vote closes in"


async def test_console_forget_mid_story_vote_keeps_one_vote_that_a_new_vote_replaces(tmp_path):
    data = tmp_path / "data"
    script = [
        "/story start a windmill",
        "1",
        "/forget",
        "/story status",  # the vote kept for the forgotten person still counts, once
        "2",  # a new vote of theirs replaces it
        "/story status",
        "/story pick 2",  # decided: the scene closes and the kept vote is sealed
    ]
    # No early close: the console's one person would otherwise decide each vote alone, at once.
    async with story_runtime(str(data), Narrator(SCENE), {}, majority=0.0) as runtime:
        lines = await run_console(runtime, script)
    assert sum(line.startswith(OPEN) for line in lines) == 2, lines  # one vote before the new vote, one after
    assert lines.index("1. Go inside [1]") < lines.index("2. Follow the stream [1]"), lines
    db = sqlite3.connect(data / "familiar.db")
    try:
        decided = db.execute("SELECT id, winner FROM story_turns WHERE number = 1").fetchone()
        votes = db.execute("SELECT turn_id, platform, user_id, user_name, option FROM story_votes").fetchall()
        secrets = db.execute("SELECT count(*) FROM story_ballot_keys").fetchone()[0]
        game = db.execute("SELECT started_by, started_by_name FROM story_games").fetchone()
    finally:
        db.close()
    assert decided[1] == 2
    assert len(votes) == 1, votes  # replaced, not added
    turn_id, platform, user_id, name, option = votes[0]
    assert (turn_id, platform, name, option) == (decided[0], "console", "someone", 2)
    assert user_id.startswith("forgotten-") and secrets == 0  # sealed when the vote was decided
    assert "local" not in game and "you" not in game


async def test_the_runtime_wires_forget_to_the_story_held_in_memory(tmp_path):
    async with story_runtime(str(tmp_path / "data"), Narrator(SCENE), {}, majority=0.0) as runtime:
        await runtime.story.begin(HOST, CHANNEL)
        await runtime.story.vote(ANN, CHANNEL, 1)
        await runtime.privacy.forget(ANN.platform, ANN.user_id)
        assert [c for c in held(runtime.story) if ANN.user_id in c or ANN.name in c] == []
        assert runtime.story.current("twitch", CHANNEL).counts == {1: 1, 2: 0, 3: 0}
