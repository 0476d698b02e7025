"""Install and uninstall the ComfyUI node pack (``plugins/comfyui/metastyle/``) in ``<ComfyUI>/custom_nodes/``.

ComfyUI imports ``custom_nodes/metastyle/__init__.py`` in its own Python, so the pack's nodes need this package
installed there too (its ``requirements.txt`` says so, and ComfyUI-Manager reads it). Installing copies the pack;
uninstalling removes exactly what was copied.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from .errors import MetastyleError
from .paths import atomic_write_bytes

PACK_NAME = "metastyle"
PACK_FILES = ("__init__.py", "nodes.py", "requirements.txt")
_RESOURCE_PACKAGE = "metastyle_batch.comfyui_pack"  # how a wheel ships plugins/comfyui/metastyle/ (see pyproject)


class ComfyInstallError(MetastyleError):
    """Installing or uninstalling failed; the message is one line meant for the user."""

    exit_code = 2


def pack_source() -> Path:
    """The pack's folder: the source checkout's, else the one shipped inside the package."""
    repo_copy = Path(__file__).resolve().parents[1] / "plugins" / "comfyui" / PACK_NAME
    if all((repo_copy / f).is_file() for f in PACK_FILES):
        return repo_copy
    spec = importlib.util.find_spec(_RESOURCE_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if all((Path(location) / f).is_file() for f in PACK_FILES):
            return Path(location)
    raise ComfyInstallError(f"the ComfyUI node pack is missing from this installation (looked in {repo_copy}); "
                            "reinstall metastyle-batch")


def pack_dir(comfy_dir: Path) -> Path:
    """``<comfy_dir>/custom_nodes/metastyle``, after checking that ``comfy_dir`` is a ComfyUI folder."""
    comfy_dir = Path(comfy_dir).expanduser()
    if not comfy_dir.is_dir():
        raise ComfyInstallError(f"{comfy_dir}: not a folder")
    if not (comfy_dir / "custom_nodes").is_dir():
        raise ComfyInstallError(f"{comfy_dir}: not a ComfyUI folder (it has no custom_nodes/)")
    return comfy_dir / "custom_nodes" / PACK_NAME


def install(comfy_dir: Path) -> Path:
    """Copy the pack into ``<comfy_dir>/custom_nodes/metastyle/`` (replacing an earlier copy of ours)."""
    source, dest = pack_source(), pack_dir(comfy_dir)
    if dest.exists() and not _ours(dest):
        raise ComfyInstallError(f"{dest} exists and was not installed by metastyle-batch; remove or rename it first")
    try:
        dest.mkdir(exist_ok=True)
        for name in PACK_FILES:
            atomic_write_bytes(dest / name, (source / name).read_bytes())
    except OSError as exc:
        raise ComfyInstallError(f"cannot install into {dest}: {exc.strerror or exc}") from None
    return dest


def uninstall(comfy_dir: Path) -> Path | None:
    """Remove the pack; returns its folder, or None when it was not installed."""
    dest = pack_dir(comfy_dir)
    if not dest.exists() and not dest.is_symlink():
        return None
    if not _ours(dest):
        raise ComfyInstallError(f"{dest} holds files metastyle-batch did not install; remove it yourself")
    try:
        shutil.rmtree(dest)
    except OSError as exc:
        raise ComfyInstallError(f"cannot remove {dest}: {exc.strerror or exc}") from None
    return dest


def _ours(dest: Path) -> bool:
    """A real folder holding only the pack's files (and Python's caches)."""
    if dest.is_symlink() or not dest.is_dir():
        return False
    present = {p.name for p in dest.iterdir()}
    return "nodes.py" in present and present <= {*PACK_FILES, "__pycache__"}
