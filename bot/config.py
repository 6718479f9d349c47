"""Typed configuration, loaded once from a TOML file.

Every section is a frozen dataclass; the loader walks the dataclasses, so a key the code does not know, a value of
the wrong type or a missing file becomes a `ConfigError` that names the key and the file. Secrets never live in the
file: keys ending in `_env` name the environment variables that hold them.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.moderation.settings import SafetySettings, settings_problem

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = PROJECT_ROOT / "config.example.toml"
DEFAULT_CONFIG = Path("config.toml")


class ConfigError(ValueError):
    """A configuration problem a person can fix; the message names the file and the key."""


@dataclass(frozen=True)
class BotConfig:
    data_dir: str = "data"
    persona: str = ""  # path to a card (.json/.png); empty = the bundled default character
    log_level: str = "INFO"


@dataclass(frozen=True)
class ModelConfig:
    backend: Literal["local", "openai"] = "local"
    source: str = "embedded"
    adapter: str = ""
    device: str = "auto"
    dtype: str = "auto"
    int4_small_batches: bool = True  # a 4-bit copy of the layers for up to a dozen streams (bf16 on a CPU)
    bundled_adapter: bool = (
        True  # serve the card's shipped tuning (<card>.adapter) in a data folder's first start
    )


@dataclass(frozen=True)
class OpenAIConfig:
    """Generation through an OpenAI-compatible server, used when `model.backend = "openai"`."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = ""
    api_key_env: str = "FAMILIAR_OPENAI_API_KEY"
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    retries: int = 2
    max_concurrency: int = 32
    max_queue: int = 128
    stream: bool = True
    send_repetition_penalty: bool = True


@dataclass(frozen=True)
class EngineConfig:
    max_batch: int = 16
    batch_window_ms: int = 15
    max_queue: int = 64
    timeout_s: float = 60.0
    torch_threads: int = 0  # 0 = let the engine choose


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 96
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.15


@dataclass(frozen=True)
class PromptConfig:
    context_tokens: int = 1536
    reply_reserve_tokens: int = 160
    example_tokens: int = 256
    persona_user: str = "User"  # what {{user}} reads as in the persona; "" = each speaker's name


@dataclass(frozen=True)
class ChatConfig:
    memory_turns: int = 24
    memory_tokens: int = 1024
    max_conversations: int = 1000
    cooldown_s: float = 2.0
    max_input_chars: int = 1000


@dataclass(frozen=True)
class ConsoleConfig:
    enabled: Literal["auto", "on", "off"] = "auto"  # auto = only when no other platform is enabled
    user_name: str = "you"


@dataclass(frozen=True)
class DiscordConfig:
    enabled: bool = False
    token_env: str = (
        "DISCORD_TOKEN"  # the environment variable holding the bot token (never the token itself)
    )
    guild_ids: tuple[int, ...] = ()  # slash commands synced here (instant); empty = globally (up to an hour)
    sync_commands: bool = True
    admin_ids: tuple[int, ...] = ()  # users with admin rights everywhere, besides Manage Server
    message_content: bool = (
        True  # privileged intent; off = only mentions, replies to the bot and DMs carry text
    )
    chat_on_mention: bool = True
    chat_on_reply: bool = True
    chat_in_dms: bool = True
    allowed_channels: tuple[
        int, ...
    ] = ()  # non-empty = chat only in these channels (threads follow their parent)
    denied_channels: tuple[int, ...] = ()
    feedback_buttons: bool = True  # 👍/👎/Regenerate buttons under each reply
    stream_replies: bool = False  # show a reply while it is written (edited at most once a second)
    sharded: bool = False  # AutoShardedBot: one process, several gateway connections (large bots)
    shard_count: int = 0  # with `sharded`: 0 = Discord's recommendation


@dataclass(frozen=True)
class TwitchConfig:
    """Twitch chat over EventSub (bot/platforms/twitch). Credentials come from the environment variables named here."""

    enabled: bool = False
    channels: tuple[str, ...] = ()  # channel logins to chat in, e.g. ("mychannel",)
    command: str = "!ask"  # "!ask how are you?" is answered; empty = mentions only
    answer_mentions: bool = True  # "@botname how are you?" is answered
    # Other bots, never answered (the bot never answers itself either).
    ignore_users: tuple[str, ...] = ("nightbot", "streamelements", "streamlabs", "moobot", "fossabot")
    max_reply_age_s: float = 60.0  # a question waiting longer than this (a busy chat) is left unanswered
    queue_per_channel: int = 20  # questions waiting per channel; the oldest are forgotten first
    client_id_env: str = "TWITCH_CLIENT_ID"
    client_secret_env: str = "TWITCH_CLIENT_SECRET"
    bot_id_env: str = "TWITCH_BOT_ID"
    bot_token_env: str = "TWITCH_BOT_TOKEN"
    bot_refresh_token_env: str = "TWITCH_BOT_REFRESH_TOKEN"


STORY_CONTROLS = ("start", "do", "say", "undo", "retry", "end")


@dataclass(frozen=True)
class StoryConfig:
    """Interactive story games (cogs/story)."""

    narrator: str = ""  # empty = the character narrates; else the name of a narrator voice
    narrator_style: str = ""  # one line describing that narrator voice
    vote_seconds: float = 60.0  # 0 = no timer: a majority or a moderator decides
    majority: float = 0.5  # close early once more than this share of the active participants voted; 0 = never
    active_turns: int = 3  # participants of this many previous scenes count as the active audience
    no_votes: Literal["random", "pause"] = "random"
    max_writeins: int = 2  # audience write-ins (do/say) per scene, on the ballot after the choices; 0 = off
    moderator_only: tuple[str, ...] = ("undo", "retry", "end")
    max_new_tokens: int = 120
    temperature: float = 0.7
    timeout_s: float = 120.0  # a scene is worth waiting for: the vote has closed, the audience waits anyway
    recent_scenes: int = 3  # scenes kept verbatim in the prompt; older ones become recap lines
    recap_tokens: int = 200
    summarize_with_model: bool = True
    max_scenes: int = 100


@dataclass(frozen=True)
class PrivacyConfig:
    """Training consent per platform and log retention (cogs/privacy)."""

    # opt-in: only people who said `consent on`; opt-out: everyone but those who said `consent off`;
    # all: everyone (a local console, a private server whose owner decided).
    discord_consent: Literal["opt-in", "opt-out", "all"] = "opt-in"
    twitch_consent: Literal["opt-in", "opt-out", "all"] = "opt-in"
    console_consent: Literal["opt-in", "opt-out", "all"] = "all"
    retention_days: int = 0  # log rows older than this are deleted daily; 0 = keep


@dataclass(frozen=True)
class TrainingConfig:
    """The learning loop (models/training, cogs/admin): dataset limits, LoRA settings and the promotion gate."""

    schedule: str = ""  # optional cron line ("0 4 * * 0" = Sundays 04:00) for an automatic retrain
    min_examples: int = 20  # fewer consenting examples than this: no run
    min_quality_share: float = 0.5  # the data-quality step kept less of the candidates than this: no run
    max_share_per_person: float = 0.2  # one person's examples above this share of the kept ones are dropped
    eval_fraction: float = 0.1  # conversations held out for the gate
    min_improvement: float = 0.01  # held-out loss (nats per reply token) must drop at least this much
    general_tolerance: float = 0.05  # the general-chat reference loss may rise by at most this share
    persona_tolerance: float = 0.0  # the persona score (share of faithful replies) may fall by at most this
    persona_samples: int = 3  # sampled replies per persona question, at the [generation] settings
    general_examples: int = (
        0  # examples of the general-chat reference the gate scores (spread evenly); 0 = all 384
    )
    persona_checks: str = (
        ""  # a persona checks file; empty = <card>.persona_checks.json next to the card, if any
    )
    dialogue_files: tuple[
        str, ...
    ] = ()  # dialogue JSONL files besides <card>.dialogue*.jsonl next to the card
    learn_from_card: bool = True  # derive training conversations from the card itself
    max_context_turns: int = 8
    max_message_chars: int = 1000
    max_seq_tokens: int = 512
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0  # 0.05 cost ~18% of a CPU step (random masks) for no gain measured here
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    learning_rate: float = 3e-4
    epochs: int = 3
    max_steps: int = 0  # optimizer steps; 0 = as many as `epochs` make
    min_steps: int = 30  # a small dataset (a card alone) gets more epochs, up to 30, to reach this many steps
    batch_size: int = 4  # tune examples are packed: ~4 conversations each
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    seed: int = 1234
    torch_threads: int = 0  # 0 = half the cores (1 on a 2-core machine) so chat keeps answering
    launcher: str = ""  # e.g. "accelerate launch --multi_gpu --num_processes 2"; empty = this Python
    checkpoint_every_s: float = 120.0  # between training checkpoints (resume after a stop); 0 = every step
    pointer_check_s: float = 30.0  # seconds between checks for a pointer moved by the CLI; 0 = never


@dataclass(frozen=True)
class PollsConfig:
    announce_timeout_s: float = 8.0  # the character's announcement; past this the plain template is used
    discord_edit_interval_s: float = 3.0  # a poll message's live tallies are edited at most this often
    twitch_ack_interval_s: float = 5.0  # Twitch vote confirmations are gathered into one chat line this often
    discord_create: Literal["everyone", "moderators"] = "everyone"
    links: tuple[str, ...] = ()  # "discord:CHANNEL_ID = twitch:CHANNEL": places that show the same polls


@dataclass(frozen=True)
class DashboardConfig:
    """The owner's web dashboard (bot/dashboard), served by the bot process; off by default."""

    enabled: bool = False
    host: str = "127.0.0.1"  # another address exposes it beyond this machine: put TLS in front
    port: int = 8765  # 0 = any free port (logged at start)
    secret_env: str = "FAMILIAR_DASHBOARD_SECRET"  # the environment variable holding the sign-in secret
    window_days: Literal[1, 7, 30, 90] = 7  # the community view's default period


# [safety]: what is checked before the character speaks (models/moderation, docs/safety.md).
SafetyConfig = SafetySettings


@dataclass(frozen=True)
class Config:
    bot: BotConfig = field(default_factory=BotConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    polls: PollsConfig = field(default_factory=PollsConfig)
    story: StoryConfig = field(default_factory=StoryConfig)
    discord: DiscordConfig = field(default_factory=DiscordConfig)
    twitch: TwitchConfig = field(default_factory=TwitchConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    source: str = "<defaults>"

    @property
    def data_dir(self) -> Path:
        return Path(self.bot.data_dir)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "familiar.db"


# Bounds that keep a typo from turning into a runaway queue or a zero-sized batch.
_POSITIVE_INTS = {
    "training.min_examples",
    "training.max_seq_tokens",
    "training.batch_size",
    "training.grad_accum",
    "training.lora_r",
    "training.max_context_turns",
    "training.max_message_chars",
    "engine.max_batch",
    "engine.max_queue",
    "generation.max_new_tokens",
    "prompt.context_tokens",
    "chat.memory_turns",
    "chat.memory_tokens",
    "chat.max_conversations",
    "chat.max_input_chars",
    "story.max_new_tokens",
    "story.active_turns",
    "story.recent_scenes",
    "story.max_scenes",
}


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the config file, or the bundled example when no path was given and `config.toml` is absent."""
    if path is None:
        if not DEFAULT_CONFIG.exists() and not EXAMPLE_CONFIG.exists():
            return Config(source="<built-in defaults>")  # an installed wheel carries no example file
        path = DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else EXAMPLE_CONFIG
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"config file {p} does not exist (copy config.example.toml to config.toml to start)"
        )
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    config = _build(Config, raw, file=str(p), prefix="")
    config = dataclasses.replace(config, source=str(p))
    _validate(config, str(p))
    return config


def config_from_dict(raw: dict[str, Any], *, source: str = "<dict>") -> Config:
    """Build a Config from an already-parsed mapping (tests and tools)."""
    config = dataclasses.replace(_build(Config, raw, file=source, prefix=""), source=source)
    _validate(config, source)
    return config


def _build(cls: type, raw: Any, *, file: str, prefix: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: [{where}] must be a table")
    hints = typing.get_type_hints(cls)
    # Config.source records where the config came from; it is not a key a file may set.
    known = {f.name for f in dataclasses.fields(cls) if not (cls is Config and f.name == "source")}
    for key in raw:
        if key not in known:
            hint = f"; known keys: {', '.join(sorted(known))}"
            raise ConfigError(f"{file}: unknown key '{prefix}{key}'{hint}")
    values: dict[str, Any] = {}
    for name in known:
        if name in raw:
            values[name] = _convert(hints[name], raw[name], file=file, key=f"{prefix}{name}")
    return cls(**values)


def _convert(tp: Any, value: Any, *, file: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, file=file, prefix=f"{key}.")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            options = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"{file}: '{key}' must be one of {options}, not {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, file=file, key=key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{file}: '{key}' has an unsupported value")
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise ConfigError(f"{file}: '{key}' must be a list, not {_kind(value)}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_convert(item_tp, v, file=file, key=f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{file}: '{key}' must be a number, not {_kind(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{file}: '{key}' must be an integer, not {_kind(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{file}: '{key}' must be true or false, not {_kind(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{file}: '{key}' must be a string, not {_kind(value)}")
        return value
    raise ConfigError(f"{file}: '{key}' has a type this version cannot read")  # pragma: no cover


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}.get(
        type(value), "a table" if isinstance(value, dict) else type(value).__name__
    ) + f" ({value!r})"


def _validate(config: Config, file: str) -> None:
    for dotted in _POSITIVE_INTS:
        section, key = dotted.split(".")
        if getattr(getattr(config, section), key) <= 0:
            raise ConfigError(f"{file}: '{dotted}' must be greater than 0")
    g = config.generation
    if not 0.0 <= g.temperature <= 2.0:
        raise ConfigError(f"{file}: 'generation.temperature' must be between 0 and 2")
    if not 0.0 < g.top_p <= 1.0:
        raise ConfigError(f"{file}: 'generation.top_p' must be in (0, 1]")
    p = config.prompt
    if p.reply_reserve_tokens >= p.context_tokens:
        raise ConfigError(
            f"{file}: 'prompt.reply_reserve_tokens' must be smaller than 'prompt.context_tokens'"
        )
    if config.model.backend == "openai" and not config.openai.model:
        raise ConfigError(
            f"{file}: 'openai.model' must name the served model when 'model.backend' is \"openai\""
        )
    d = config.discord
    if not d.token_env.strip():
        raise ConfigError(
            f"{file}: 'discord.token_env' must name an environment variable (default DISCORD_TOKEN)"
        )
    if d.shard_count < 0:
        raise ConfigError(f"{file}: 'discord.shard_count' must be 0 (Discord's recommendation) or more")
    if set(d.allowed_channels) & set(d.denied_channels):
        raise ConfigError(
            f"{file}: a channel is in both 'discord.allowed_channels' and 'discord.denied_channels'"
        )
    tw = config.twitch
    if tw.max_reply_age_s <= 0 or tw.queue_per_channel <= 0:
        raise ConfigError(f"{file}: 'twitch.max_reply_age_s' and 'twitch.queue_per_channel' must be above 0")
    if tw.enabled and not tw.channels:
        raise ConfigError(f"{file}: 'twitch.enabled' is true but 'twitch.channels' names no channel")
    s = config.story
    if s.vote_seconds < 0 or not 0.0 <= s.majority < 1.0 or not 0 <= s.max_writeins <= 4:
        raise ConfigError(
            f"{file}: 'story.vote_seconds' must be >= 0, 'story.majority' in [0, 1), 'story.max_writeins' in 0..4"
        )
    unknown = sorted(set(s.moderator_only) - set(STORY_CONTROLS))
    if unknown:
        known = ", ".join(STORY_CONTROLS)
        raise ConfigError(f"{file}: 'story.moderator_only' knows only {known}, not {unknown}")
    level = config.bot.log_level.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ConfigError(f"{file}: 'bot.log_level' must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    t = config.training
    if not 0.0 < t.eval_fraction < 1.0:
        raise ConfigError(f"{file}: 'training.eval_fraction' must be between 0 and 1")
    if not 0.0 <= t.min_quality_share <= 1.0 or not 0.0 < t.max_share_per_person <= 1.0:
        raise ConfigError(
            f"{file}: 'training.min_quality_share' must be in [0, 1] (0 = never refuse) and "
            "'training.max_share_per_person' in (0, 1] (1 = no cap)"
        )
    if t.pointer_check_s < 0:
        raise ConfigError(f"{file}: 'training.pointer_check_s' must be 0 (off) or a number of seconds")
    if t.general_tolerance < 0 or not 0.0 <= t.persona_tolerance <= 1.0 or t.persona_samples < 1:
        raise ConfigError(
            f"{file}: 'training.general_tolerance' must be >= 0, 'training.persona_tolerance' in [0, 1] and "
            "'training.persona_samples' at least 1"
        )
    if t.checkpoint_every_s < 0:
        raise ConfigError(
            f"{file}: 'training.checkpoint_every_s' must be 0 (every step) or a number of seconds"
        )
    if config.privacy.retention_days < 0:
        raise ConfigError(f"{file}: 'privacy.retention_days' must be 0 (keep) or a number of days")
    if (safety := settings_problem(config.safety)) is not None:
        key, problem = safety
        raise ConfigError(f"{file}: '{key}' {problem}")
    if t.schedule.strip():
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(t.schedule)
        except ValueError as exc:
            raise ConfigError(f"{file}: 'training.schedule' is not a cron line ({exc})") from None


def secret(config_file: str, key: str, env_name: str, *, required: bool = True) -> str | None:
    """Read a secret from the environment variable the config names; never echo its value."""
    value = os.environ.get(env_name, "").strip()
    if not value and required:
        raise ConfigError(f"{config_file}: '{key}' names environment variable {env_name}, which is not set")
    return value or None
