"""The story's choice parser: every shape the small model writes, and every way it goes wrong."""

import pytest

from cogs.story.parser import (
    FALLBACK_CHOICES,
    MAX_CHOICE_CHARS,
    MAX_CHOICES,
    clean_choice,
    parse_choices,
    parse_scene,
    trim_narration,
    with_fallback_choices,
)


@pytest.mark.parametrize(
    "raw",
    [
        "The cave is dark and wet.\n1. Light a torch\n2. Call out\n3. Go back",
        "The cave is dark and wet.\n1) Light a torch\n2) Call out\n3) Go back",
        "The cave is dark and wet.\n(1) Light a torch\n(2) Call out\n(3) Go back",
        "The cave is dark and wet.\nA) Light a torch\nB) Call out\nC) Go back",
        "The cave is dark and wet.\n- Light a torch\n- Call out\n* Go back",
        "The cave is dark and wet.\n**1.** Light a torch\n**2.** Call out\n**3.** Go back",
        "The cave is dark and wet.\nOption 1: Light a torch\nOption 2: Call out\nOption 3: Go back",
        "The cave is dark and wet.\nChoices:\n1. Light a torch\n2. Call out\n3. Go back",
        "The cave is dark and wet. What do you do? 1. Light a torch 2. Call out 3. Go back",
        "The cave is dark and wet.\n\n1. Light a torch\n\n2. Call out\n\n3. Go back\nThe end of the scene rambles on.",
    ],
)
def test_every_numbering_style_gives_the_same_scene(raw):
    scene = parse_scene(raw)
    assert scene.ok, scene.problems
    assert scene.narration.startswith("The cave is dark and wet.")
    assert scene.choices == ("Light a torch", "Call out", "Go back")


def test_no_choices_is_reported():
    scene = parse_scene("The wind howls over the moor, and nothing else happens at all.")
    assert scene.narration.startswith("The wind howls")
    assert scene.choices == ()
    assert not scene.ok and "0 usable choice(s)" in scene.problems


def test_one_choice_is_reported():
    scene = parse_scene("A door.\n1. Open it")
    assert not scene.ok


def test_nine_choices_are_capped_and_reported():
    raw = "A market square bustles with traders.\n" + "\n".join(
        f"{i}. Visit stall number {i}" for i in range(1, 10)
    )
    scene = parse_scene(raw)
    assert len(scene.choices) == MAX_CHOICES
    assert scene.choices[0] == "Visit stall number 1"
    assert "9 choices" in scene.problems


def test_empty_narration_is_reported():
    scene = parse_scene("1. Run\n2. Hide\n3. Fight")
    assert scene.choices == ("Run", "Hide", "Fight")
    assert "no narration" in scene.problems
    assert parse_scene("").problems and parse_scene("   \n ").choices == ()


def test_junk_is_stripped_duplicates_dropped_and_invented_turns_cut():
    raw = (
        "<|im_start|>assistant\nThe ship lurches as the storm hits.\n"
        '1. **Grab the wheel**\n2. "Grab the wheel!"\n3. -\n4. ***\n5. Climb the mast<|im_end|>\n'
        "6. Hide below\nUser: I pick 1\n7. Something invented after the turn"
    )
    scene = parse_scene(raw)
    assert scene.narration == "The ship lurches as the storm hits."
    assert scene.choices == ("Grab the wheel", "Climb the mast", "Hide below")
    assert all(c.strip() for c in scene.choices)
    assert scene.ok


def test_long_choices_are_cut_to_a_button_label():
    choice = clean_choice("Walk " + "very " * 40 + "slowly")
    assert len(choice) <= MAX_CHOICE_CHARS and choice.endswith("…")


def test_prose_starting_with_a_letter_is_not_a_choice():
    scene = parse_scene("A lantern flickers in the window.\nA) Knock\nB) Leave")
    assert scene.narration == "A lantern flickers in the window."
    assert scene.choices == ("Knock", "Leave")


def test_role_labels_are_not_choices():
    assert clean_choice("User: pick two") == ""
    assert clean_choice("  ") == ""
    assert clean_choice("...") == ""


def test_fallback_choices_never_empty_and_never_duplicate():
    assert with_fallback_choices(()) == FALLBACK_CHOICES[:3]
    topped = with_fallback_choices(("Press on ahead",))
    assert len(topped) == 3 and len(set(topped)) == 3
    assert with_fallback_choices(("a1", "b2", "c3")) == ("a1", "b2", "c3")


def test_narration_is_cut_at_a_sentence():
    text = "One sentence here. " * 200
    cut = trim_narration(text, 300)
    assert len(cut) <= 300 and cut.endswith(".")


def test_unfinished_last_sentence_is_dropped():
    scene = parse_scene("The gate opens. A cold wind blows through the hall and the\n1. Enter\n2. Wait")
    assert scene.narration == "The gate opens."


def test_assistant_talk_is_not_a_story():
    scene = parse_scene("Sure! Let me know if you have any other requests.\n1. Yes\n2. No")
    assert "not a story" in scene.problems


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1. Knock\n2. Run away\n3. Hide", ("Knock", "Run away", "Hide")),
        ("4. Knock on the door\n5. Run away", ("Knock on the door", "Run away")),
        ("Knock\nRun away\nHide", ("Knock", "Run away", "Hide")),
        ("", ()),
    ],
)
def test_parse_choices_alone(raw, expected):
    assert parse_choices(raw) == expected
