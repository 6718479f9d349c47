"""Adapter versions on disk and the pointer that names the one being served.

Layout under ``<data_dir>/adapters/``::

    v0001/  adapter_config.json  adapter_model.safetensors  meta.json
    v0002/  ...
    ACTIVE  "v0002" (or "base": no adapter) — replaced atomically (temp file + os.replace)
    history.jsonl  one line per pointer change (promote, rollback), appended, never rewritten

A version is written in a staging directory and renamed into place whole, so a crash leaves either no version or
a complete one; the pointer changes only after the version it names has been validated.

Every pointer change is appended to ``history.jsonl`` as one JSON line written with a single ``write`` on a file
opened for appending (and fsynced), so lines never interleave and a crash can at worst leave a torn last line, which
the reader skips. Reading is bounded: only the file's last ``HISTORY_READ_BYTES`` are read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
META = "meta.json"
POINTER = "ACTIVE"
BASE = "base"  # the pointer's value when no adapter is served
STAGING_PREFIX = ".staging-"
MAX_REJECTED_KEPT = 5  # rejected candidates kept for inspection; older ones are deleted
HISTORY = "history.jsonl"
HISTORY_READ_BYTES = 256 * 1024  # the tail of the history read at most (about 1,500 entries)
HISTORY_MAX_ENTRIES = 500  # entries `history()` returns at most, newest kept
HISTORY_ACTIONS = ("promote", "rollback", "activate")
_VERSION_RE = re.compile(r"^v(\d{4,})$")


class RegistryError(RuntimeError):
    """A version that does not exist or cannot be served; the message says which and why."""


@dataclass(frozen=True)
class Version:
    name: str
    path: Path
    meta: dict[str, Any]

    @property
    def promoted(self) -> bool:
        return bool(self.meta.get("promoted"))


@dataclass(frozen=True)
class HistoryEntry:
    """One pointer change: ``version`` (None = the base model) became active, replacing ``previous``."""

    at: float
    action: str  # promote | rollback | activate (any other pointer change, e.g. a CLI without a reason)
    version: str | None
    previous: str | None
    by: str = ""
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "action": self.action,
            "version": self.version or BASE,
            "previous": self.previous or BASE,
            "by": self.by,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, data: Any) -> HistoryEntry | None:
        """None for a line that is not a well-formed entry (a torn write, a hand edit)."""
        if not isinstance(data, dict):
            return None
        at, action = data.get("at"), data.get("action")
        if not isinstance(at, int | float) or isinstance(at, bool) or action not in HISTORY_ACTIONS:
            return None

        def name(value: Any) -> str | None:
            return None if value in (None, "", BASE) else str(value)

        return cls(
            at=float(at),
            action=action,
            version=name(data.get("version")),
            previous=name(data.get("previous")),
            by=str(data.get("by") or ""),
            detail=str(data.get("detail") or ""),
        )


def validate_adapter(path: Path) -> None:
    """Raise RegistryError unless ``path`` holds a readable LoRA adapter (config + safetensors weights)."""
    config_path = path / ADAPTER_CONFIG
    weights_path = path / ADAPTER_WEIGHTS
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{path.name}: {ADAPTER_CONFIG} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{path.name}: {ADAPTER_CONFIG} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or not config.get("peft_type") or not config.get("target_modules"):
        raise RegistryError(f"{path.name}: {ADAPTER_CONFIG} lacks peft_type/target_modules")
    try:
        from safetensors import safe_open

        with safe_open(str(weights_path), framework="pt") as f:
            keys = list(f.keys())
            if not keys:
                raise RegistryError(f"{path.name}: {ADAPTER_WEIGHTS} holds no tensors")
            for key in keys:
                f.get_slice(key).get_shape()
    except RegistryError:
        raise
    except FileNotFoundError:
        raise RegistryError(f"{path.name}: {ADAPTER_WEIGHTS} is missing") from None
    except Exception as exc:  # safetensors raises its own error types for truncated or garbled files
        raise RegistryError(f"{path.name}: {ADAPTER_WEIGHTS} is corrupt ({exc})") from None
    if weights_path.stat().st_size < 64:
        raise RegistryError(f"{path.name}: {ADAPTER_WEIGHTS} is truncated")


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: a crash leaves the old file or the new one, never half of either."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class Registry:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # ----------------------------------------------------------------------------------------------- reading
    def versions(self) -> list[Version]:
        if not self.root.is_dir():
            return []
        found = []
        for child in self.root.iterdir():
            if child.is_dir() and _VERSION_RE.match(child.name):
                found.append(Version(child.name, child, self._meta(child)))
        return sorted(found, key=lambda v: int(v.name[1:]))

    def get(self, name: str) -> Version:
        path = self.root / name
        if not _VERSION_RE.match(name) or not path.is_dir():
            known = ", ".join(v.name for v in self.versions()) or "none yet"
            raise RegistryError(f"no adapter version {name!r} (versions: {known})")
        return Version(name, path, self._meta(path))

    def active_name(self) -> str | None:
        """The served version's name, or None for the bare base model."""
        try:
            value = (self.root / POINTER).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return None if value in ("", BASE) else value

    def active(self) -> Version | None:
        name = self.active_name()
        return self.get(name) if name else None

    # ----------------------------------------------------------------------------------------------- writing
    def new_staging_dir(self) -> Path:
        """An empty directory for a candidate; `commit` turns it into a version."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{STAGING_PREFIX}{os.getpid()}-{time.time_ns()}"
        path.mkdir()
        return path

    def clean_staging(self) -> int:
        """Remove candidates left by interrupted runs; returns how many."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for child in self.root.iterdir():
            if child.name.startswith(STAGING_PREFIX):
                shutil.rmtree(child, ignore_errors=True)
                removed += 1
        return removed

    def commit(self, staging: Path, meta: dict[str, Any]) -> Version:
        """Validate the adapter in ``staging``, add ``meta.json`` and rename it into place as the next version."""
        validate_adapter(staging)
        numbers = [int(v.name[1:]) for v in self.versions()]
        name = f"v{(max(numbers) + 1) if numbers else 1:04d}"
        meta = {**meta, "version": name}
        write_atomic(staging / META, json.dumps(meta, indent=2, sort_keys=True))
        target = self.root / name
        os.replace(staging, target)
        _fsync_dir(self.root)
        return Version(name, target, meta)

    def activate(
        self, name: str | None, *, action: str = "activate", by: str = "", detail: str = ""
    ) -> Version | None:
        """Point at ``name`` (None = the base model) after validating it; the old pointer stays on any error.

        The change is appended to the history as ``action`` (promote | rollback | activate) by ``by``.
        """
        if action not in HISTORY_ACTIONS:
            raise ValueError(f"unknown history action {action!r}")
        self.root.mkdir(parents=True, exist_ok=True)
        version = None
        if name is not None and name != BASE:
            version = self.get(name)
            validate_adapter(version.path)
        previous = self.active_name()
        write_atomic(self.root / POINTER, (version.name if version else BASE) + "\n")
        entry = HistoryEntry(
            at=time.time(),
            action=action,
            version=version.name if version else None,
            previous=previous,
            by=by,
            detail=detail,
        )
        self._append_history(entry)
        return version

    # ----------------------------------------------------------------------------------------------- history
    def _append_history(self, entry: HistoryEntry) -> None:
        line = (json.dumps(entry.as_json(), ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        fd = os.open(self.root / HISTORY, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # end a line torn by a crash, so it costs only itself
            os.write(fd, line)  # one write of one line: appends never interleave
            os.fsync(fd)
        finally:
            os.close(fd)

    def history(self, limit: int = HISTORY_MAX_ENTRIES) -> list[HistoryEntry]:
        """The latest pointer changes, oldest first (at most ``limit``, from the file's last HISTORY_READ_BYTES)."""
        path = self.root / HISTORY
        try:
            with open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                start = max(0, size - HISTORY_READ_BYTES)
                f.seek(start)
                data = f.read()
        except FileNotFoundError:
            return []
        lines = data.split(b"\n")
        if start > 0:
            lines = lines[1:]  # the first line is cut by the bound
        entries = []
        for raw in lines:
            if not raw.strip():
                continue
            try:
                entry = HistoryEntry.from_json(json.loads(raw))
            except ValueError:  # a torn last line (a crash mid-write) or garbage
                entry = None
            if entry is not None:
                entries.append(entry)
        return entries[-limit:] if limit > 0 else []

    def mark(self, version: Version, **fields: Any) -> Version:
        """Update a version's metadata (e.g. promoted=True)."""
        meta = {**version.meta, **fields}
        write_atomic(version.path / META, json.dumps(meta, indent=2, sort_keys=True))
        return Version(version.name, version.path, meta)

    def previous(self) -> str | None:
        """The promoted version before the active one (None = the base model): the default rollback target."""
        active = self.active_name()
        limit = int(active[1:]) if active else 0
        older = [v for v in self.versions() if v.promoted and (not active or int(v.name[1:]) < limit)]
        return older[-1].name if older and active else None

    def prune_rejected(self, keep: int = MAX_REJECTED_KEPT) -> list[str]:
        """Delete all but the newest ``keep`` never-promoted versions (the active one is always kept)."""
        active = self.active_name()
        rejected = [v for v in self.versions() if not v.promoted and v.name != active]
        doomed = rejected[:-keep] if keep > 0 else rejected
        for v in doomed:
            shutil.rmtree(v.path, ignore_errors=True)
        return [v.name for v in doomed]

    @staticmethod
    def _meta(path: Path) -> dict[str, Any]:
        try:
            meta = json.loads((path / META).read_text(encoding="utf-8"))
            return meta if isinstance(meta, dict) else {}
        except (OSError, ValueError):
            return {}
