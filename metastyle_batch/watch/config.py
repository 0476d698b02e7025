"""Configuration of the watch daemon: the watched folders (:class:`FolderSpec`) and ``watch.toml`` files.

Nothing here imports torch (``metastyle-batch watch --status`` only needs this, the journal and the rules).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Optional

from ..errors import MetastyleError, one_line
from ..formats import FORMAT_EXT, format_name
from ..paths import not_regular
from .rules import is_under

__all__ = ["JOURNAL_NAME", "WatchError", "FolderSpec", "WatchConfig", "load_config", "check_folders"]

JOURNAL_NAME = ".metastyle-watch.sqlite3"


class WatchError(MetastyleError):
    """A configuration or start-up problem (bad folder, unreadable style, journal locked); one line."""

    exit_code = 2  # the user must change what they asked for


@dataclass
class FolderSpec:
    """One watched folder: where files land, where results go, which style and options."""

    in_dir: Path
    out_dir: Path
    style: Optional[Path]  # required to run; a status report does without
    name: str = ""
    strength: float = 1.0
    preserve_color: bool = False
    max_side: Optional[int] = None
    format: Optional[str] = None  # a key of images.FORMAT_EXT; None keeps each input's own format
    quality: int = 95
    video_quality: Optional[int] = None  # 1-100 for H.264 (video.DEFAULT_QUALITY when None)
    recursive: bool = True
    failed_dir: Optional[Path] = None  # move inputs that fail here (mirroring their relative path)
    journal: Optional[Path] = None  # default OUT/.metastyle-watch.sqlite3

    def resolved(self, require_style: bool = True) -> "FolderSpec":
        """Absolute, symlink-free paths, validated options and defaults filled in; raises WatchError."""
        def absolute(p: Optional[Path]) -> Optional[Path]:
            return None if p is None else Path(os.path.realpath(Path(p).expanduser()))

        spec = replace(self, in_dir=absolute(self.in_dir), out_dir=absolute(self.out_dir),
                       style=absolute(self.style), failed_dir=absolute(self.failed_dir), journal=absolute(self.journal))
        where = f"folder {self.name!r}: " if self.name else ""
        if not spec.name:
            spec.name = spec.in_dir.name or str(spec.in_dir)
        if not spec.in_dir.is_dir():
            raise WatchError(f"{where}input folder {self.in_dir} does not exist or is not a folder")
        if spec.out_dir == spec.in_dir:
            raise WatchError(f"{where}OUT must differ from IN ({self.in_dir}); outputs would replace the inputs")
        if is_under(spec.in_dir, spec.out_dir):
            raise WatchError(f"{where}IN ({self.in_dir}) must not be inside OUT ({self.out_dir})")
        if spec.out_dir.exists() and not spec.out_dir.is_dir():
            raise WatchError(f"{where}OUT {self.out_dir} exists and is not a folder")
        if require_style and (spec.style is None or not spec.style.is_file()):
            kind = spec.style is not None and not_regular(spec.style)
            raise WatchError(f"{where}style image {self.style} is {kind}, not an image file" if kind
                             else f"{where}style image not found: {self.style}")
        if spec.failed_dir is not None and (spec.failed_dir == spec.in_dir or is_under(spec.failed_dir, spec.out_dir)
                                            or spec.failed_dir == spec.out_dir):
            raise WatchError(f"{where}the failed folder must not be IN or inside OUT")
        if spec.format is not None:
            fmt = format_name(spec.format)
            if fmt is None:
                raise WatchError(f"{where}unknown format {spec.format!r}; use {', '.join(sorted(FORMAT_EXT))}")
            spec.format = fmt
        if not 0.0 <= float(spec.strength) <= 1.0:
            raise WatchError(f"{where}strength must be between 0 and 1, got {spec.strength}")
        if spec.max_side is not None and int(spec.max_side) < 1:
            raise WatchError(f"{where}max_side must be at least 1, got {spec.max_side}")
        if not 1 <= int(spec.quality) <= 100:
            raise WatchError(f"{where}quality must be from 1 to 100, got {spec.quality}")
        if spec.video_quality is not None and not 1 <= int(spec.video_quality) <= 100:
            raise WatchError(f"{where}video_quality must be from 1 to 100, got {spec.video_quality}")
        if spec.journal is None:
            spec.journal = spec.out_dir / JOURNAL_NAME
        return spec

    @property
    def key(self) -> str:
        """Rows of one folder in a (possibly shared) journal are told apart by the output folder."""
        return str(self.out_dir)


@dataclass
class WatchConfig:
    """What a ``watch.toml`` holds: global options and the folders."""

    folders: list[FolderSpec]
    device: Optional[str] = None
    model: Optional[Path] = None
    settle: Optional[float] = None
    retries: Optional[int] = None
    retry_delay: Optional[float] = None
    rescan: Optional[float] = None


_GLOBAL_KEYS = {"device", "model", "settle", "retries", "retry_delay", "rescan", "journal", "folder", "folders"}
_FOLDER_KEYS = {"name", "in", "out", "style", "strength", "preserve_color", "max_side", "format", "quality",
                "video_quality", "recursive", "failed", "failed_dir", "journal"}


def load_config(path: str | os.PathLike) -> WatchConfig:
    """Read a TOML config (``[[folder]]`` tables; see ``examples/watch.toml``); raises WatchError.

    Relative paths are relative to the config file's folder; ``~`` is expanded.
    """
    import tomllib

    path = Path(path).expanduser()
    if kind := not_regular(path):
        raise WatchError(path, f"is {kind}, not a config file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WatchError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WatchError(path, f"cannot read config ({getattr(exc, 'strerror', None) or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise WatchError(path, f"invalid TOML ({one_line(exc)})") from None
    base = path.resolve().parent

    def norm(d: dict) -> dict:
        return {str(k).replace("-", "_"): v for k, v in d.items()}

    def to_path(value: Any, what: str) -> Path:
        if not isinstance(value, str) or not value:
            raise WatchError(path, f"{what} must be a non-empty string (a path)")
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    top = norm(data)
    unknown = set(top) - _GLOBAL_KEYS
    if unknown:
        raise WatchError(path, f"unknown setting(s) {', '.join(sorted(unknown))}; "
                               f"known: {', '.join(sorted(_GLOBAL_KEYS - {'folders'}))}")
    tables = top.get("folder", top.get("folders"))
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise WatchError(path, "no [[folder]] tables; each needs in, out and style")
    shared_journal = to_path(top["journal"], "journal") if "journal" in top else None

    folders = []
    for i, raw in enumerate(tables, 1):
        t = norm(raw)
        label = f"[[folder]] #{i}" + (f" ({t['name']})" if isinstance(t.get("name"), str) else "")
        unknown = set(t) - _FOLDER_KEYS
        if unknown:
            raise WatchError(path, f"{label}: unknown key(s) {', '.join(sorted(unknown))}; "
                                   f"known: {', '.join(sorted(_FOLDER_KEYS - {'failed_dir'}))}")
        missing = [k for k in ("in", "out", "style") if k not in t]
        if missing:
            raise WatchError(path, f"{label}: missing {', '.join(missing)}")
        try:
            failed = t.get("failed", t.get("failed_dir"))
            spec = FolderSpec(
                in_dir=to_path(t["in"], f"{label} in"), out_dir=to_path(t["out"], f"{label} out"),
                style=to_path(t["style"], f"{label} style"), name=str(t.get("name", "")),
                strength=_typed(t, "strength", float, 1.0), preserve_color=_typed(t, "preserve_color", bool, False),
                max_side=_typed(t, "max_side", int, None), format=_typed(t, "format", str, None),
                quality=_typed(t, "quality", int, 95), video_quality=_typed(t, "video_quality", int, None),
                recursive=_typed(t, "recursive", bool, True),
                failed_dir=to_path(failed, f"{label} failed") if failed is not None else None,
                journal=to_path(t["journal"], f"{label} journal") if "journal" in t else shared_journal,
            )
        except (TypeError, ValueError) as exc:
            raise WatchError(path, f"{label}: {exc}") from None
        folders.append(spec)
    try:
        return WatchConfig(
            folders=folders, device=_typed(top, "device", str, None),
            model=to_path(top["model"], "model") if "model" in top else None,
            settle=_typed(top, "settle", float, None), retries=_typed(top, "retries", int, None),
            retry_delay=_typed(top, "retry_delay", float, None), rescan=_typed(top, "rescan", float, None),
        )
    except (TypeError, ValueError) as exc:
        raise WatchError(path, str(exc)) from None


def _typed(table: dict, key: str, kind: type, default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        expected = "a number" if kind in (int, float) else "true/false" if kind is bool else "a string"
        raise TypeError(f"{key} must be {expected}, got {value!r}")
    return value


def check_folders(specs: Iterable[FolderSpec], require_style: bool = True) -> list[FolderSpec]:
    """Resolve and validate every folder; two folders must not write to the same OUT."""
    resolved = [s.resolved(require_style) for s in specs]
    seen: dict[Path, str] = {}
    for s in resolved:
        if s.out_dir in seen:
            raise WatchError(f"folders {seen[s.out_dir]!r} and {s.name!r} both write to {s.out_dir}; give each its own OUT")
        seen[s.out_dir] = s.name
    return resolved
