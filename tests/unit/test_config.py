import pytest

from bot.config import EXAMPLE_CONFIG, Config, ConfigError, config_from_dict, load_config


def write(tmp_path, text):
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_example_config_loads_and_matches_defaults():
    config = load_config(EXAMPLE_CONFIG)
    defaults = Config()
    for section in ("bot", "model", "engine", "generation", "prompt", "chat", "console"):
        assert getattr(config, section) == getattr(defaults, section), section


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "[chat]\ncooldwn_s = 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "chat.cooldwn_s" in str(err.value)
    assert str(p) in str(err.value)


def test_unknown_section_named(tmp_path):
    p = write(tmp_path, "[chatt]\nx = 1\n")
    with pytest.raises(ConfigError, match="unknown key 'chatt'"):
        load_config(p)


@pytest.mark.parametrize(
    ("text", "key", "kind"),
    [
        ('[engine]\nmax_batch = "8"\n', "engine.max_batch", "integer"),
        ("[engine]\nmax_batch = true\n", "engine.max_batch", "integer"),
        ('[chat]\ncooldown_s = "soon"\n', "chat.cooldown_s", "number"),
        ("[bot]\npersona = 3\n", "bot.persona", "string"),
        ('[console]\nenabled = "maybe"\n', "console.enabled", "one of"),
        ("chat = 3\n", "chat", "table"),
    ],
)
def test_wrong_type_names_key(tmp_path, text, key, kind):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert key in str(err.value) and kind in str(err.value) and str(p) in str(err.value)


def test_integer_accepted_for_float(tmp_path):
    assert load_config(write(tmp_path, "[chat]\ncooldown_s = 3\n")).chat.cooldown_s == 3.0


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[chat\n"))


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"engine": {"max_queue": 0}}, "engine.max_queue"),
        ({"generation": {"temperature": 5}}, "generation.temperature"),
        ({"prompt": {"context_tokens": 100, "reply_reserve_tokens": 100}}, "prompt.reply_reserve_tokens"),
        ({"bot": {"log_level": "LOUD"}}, "bot.log_level"),
        ({"story": {"majority": 1.5}}, "story.majority"),
        ({"story": {"max_writeins": 9}}, "story.max_writeins"),
        ({"story": {"moderator_only": ["undo", "fly"]}}, "story.moderator_only"),
        ({"story": {"max_scenes": 0}}, "story.max_scenes"),
        ({"training": {"pointer_check_s": -1}}, "training.pointer_check_s"),
        ({"training": {"min_quality_share": 1.5}}, "training.min_quality_share"),
        ({"training": {"max_share_per_person": 0}}, "training.max_share_per_person"),
    ],
)
def test_out_of_range_values(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(raw)


def test_cli_exits_non_zero_without_traceback(tmp_path, capsys):
    from bot.cli import main

    p = write(tmp_path, "[chat]\nbogus = 1\n")
    assert main(["--config", str(p), "chat"]) == 2
    err = capsys.readouterr().err
    assert "chat.bogus" in err and "Traceback" not in err


def test_twitch_section():
    config = config_from_dict({"twitch": {"enabled": True, "channels": ["mychannel"], "command": "!hey"}})
    assert config.twitch.channels == ("mychannel",) and config.twitch.command == "!hey"
    with pytest.raises(ConfigError, match=r"twitch\.channels"):
        config_from_dict({"twitch": {"enabled": True}})
    with pytest.raises(ConfigError, match=r"twitch\.max_reply_age_s"):
        config_from_dict({"twitch": {"max_reply_age_s": 0}})
