"""Install and uninstall the GIMP 3 plug-in (``plugins/gimp/metastyle/metastyle.py``).

GIMP's own Python cannot import torch, so the plug-in does not import this package: it runs the
``metastyle-batch`` command line (``metastyle-batch image … --json``) as a separate process. Installing
therefore does two things in ``<GIMP dir>/plug-ins/metastyle/``:

* copies ``metastyle.py`` there with its run bit (GIMP 3 only loads a plug-in that sits in a folder of its
  own name and is executable);
* writes ``metastyle-batch.path`` next to it: one line, the absolute path of the ``metastyle-batch``
  executable of the environment that ran the install, which is the one the plug-in calls.

The GIMP dir is ``$GIMP3_DIRECTORY`` when set (GIMP honours it too), else GIMP 3.0's per-user folder:
``$XDG_CONFIG_HOME/GIMP/3.0`` (``~/.config/GIMP/3.0``) on Linux, ``~/Library/Application Support/GIMP/3.0``
on macOS and ``%APPDATA%\\GIMP\\3.0`` on Windows.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import MetastyleError
from .paths import atomic_write_bytes

PLUGIN_NAME = "metastyle"  # folder name == file stem: GIMP 3 requires it
PLUGIN_FILE = f"{PLUGIN_NAME}.py"
EXECUTABLE_FILE = "metastyle-batch.path"  # must match EXECUTABLE_FILE in the plug-in
SCRIPT_NAME = "metastyle-batch"
GIMP_VERSION_DIR = "3.0"
_RESOURCE_PACKAGE = "metastyle_batch.gimp_plugin"  # how a wheel ships plugins/gimp/metastyle/ (see pyproject)


class GimpInstallError(MetastyleError):
    """Installing or uninstalling failed; the message is one line meant for the user."""


@dataclass
class Installed:
    plugin_dir: Path  # <GIMP dir>/plug-ins/metastyle
    plugin: Path  # … /metastyle.py
    executable: Path  # what the plug-in will run


def plugin_source() -> Path:
    """The plug-in file that gets copied: the source checkout's, else the one shipped inside the package."""
    repo_copy = Path(__file__).resolve().parents[1] / "plugins" / "gimp" / PLUGIN_NAME / PLUGIN_FILE
    if repo_copy.is_file():
        return repo_copy
    try:  # a wheel maps plugins/gimp/metastyle/ to this data package (see pyproject.toml)
        spec = importlib.util.find_spec(_RESOURCE_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        shipped = Path(location) / PLUGIN_FILE
        if shipped.is_file():
            return shipped
    raise GimpInstallError(
        f"the GIMP plug-in file {PLUGIN_FILE} is missing from this installation (looked in {repo_copy.parent} "
        f"and in the package {_RESOURCE_PACKAGE}); reinstall metastyle-batch"
    )


def default_gimp_dir() -> Path:
    """GIMP 3.0's per-user configuration folder (where ``plug-ins/`` lives) on this platform."""
    if env := os.environ.get("GIMP3_DIRECTORY"):
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base.expanduser() / "GIMP" / GIMP_VERSION_DIR


def plugin_dir(gimp_dir: Optional[Path] = None) -> Path:
    return Path(gimp_dir or default_gimp_dir()).expanduser() / "plug-ins" / PLUGIN_NAME


def _is_runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def current_executable() -> Path:
    """The absolute path of the ``metastyle-batch`` executable of the running environment.

    In order: the script that is running (``sys.argv[0]`` when it is ``metastyle-batch``), the script next
    to this interpreter (venvs, pipx), the interpreter's scripts folders (system and ``--user``), ``PATH``.
    """
    exe_name = SCRIPT_NAME + (".exe" if sys.platform == "win32" else "")
    candidates: list[Path] = []
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name in (SCRIPT_NAME, exe_name):
        candidates.append(argv0)
    candidates.append(Path(sys.executable).parent / exe_name)
    for scheme in (None, f"{os.name}_user"):
        try:
            scripts = sysconfig.get_path("scripts", scheme) if scheme else sysconfig.get_path("scripts")
        except KeyError:
            continue
        if scripts:
            candidates.append(Path(scripts) / exe_name)
    if found := shutil.which(SCRIPT_NAME):
        candidates.append(Path(found))
    for candidate in candidates:
        if _is_runnable(candidate):
            return Path(os.path.abspath(candidate))
    raise GimpInstallError(
        f"cannot find the {SCRIPT_NAME} executable of this Python ({sys.executable}); run the install from the "
        f"environment where metastyle-batch is installed, e.g. /path/to/venv/bin/{SCRIPT_NAME} gimp install"
    )


def install(gimp_dir: Optional[Path] = None, executable: Optional[Path] = None) -> Installed:
    """Copy the plug-in into ``<gimp_dir>/plug-ins/metastyle/`` (run bit set) and record the executable.

    Re-running replaces both files (an upgrade or a new venv). Raises :class:`GimpInstallError`.
    """
    source = plugin_source()
    exe = Path(os.path.abspath(Path(executable).expanduser())) if executable else current_executable()
    if not _is_runnable(exe):
        raise GimpInstallError(f"{exe} is not an executable file")
    if "\n" in str(exe) or "\r" in str(exe):
        raise GimpInstallError(f"the executable path {exe!r} contains a line break; GIMP could not read it back")
    dest = plugin_dir(gimp_dir)
    target = dest / PLUGIN_FILE
    try:
        if dest.exists() and not dest.is_dir():
            raise GimpInstallError(f"{dest} exists and is not a folder; remove it first")
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, source.read_bytes(), mode=0o755)
        if not os.access(target, os.X_OK) and sys.platform != "win32":
            raise GimpInstallError(f"{target} is not executable after install (is the file system mounted noexec?)")
        atomic_write_bytes(dest / EXECUTABLE_FILE, (str(exe) + "\n").encode("utf-8"), mode=0o644)
    except GimpInstallError:
        raise
    except OSError as exc:
        raise GimpInstallError(f"cannot install into {dest}: {exc.strerror or exc}") from None
    return Installed(dest, target, exe)


def uninstall(gimp_dir: Optional[Path] = None) -> Optional[Path]:
    """Remove ``<gimp_dir>/plug-ins/metastyle/``; returns it, or None when nothing was installed there.

    Refuses to delete a folder that does not hold our plug-in (someone else's ``metastyle`` folder).
    """
    dest = plugin_dir(gimp_dir)
    if not dest.exists() and not dest.is_symlink():
        return None
    if dest.is_symlink() or not dest.is_dir():
        raise GimpInstallError(f"{dest} is not a folder made by 'metastyle-batch gimp install'; remove it yourself")
    ours = {PLUGIN_FILE, EXECUTABLE_FILE, "__pycache__"}
    present = {p.name for p in dest.iterdir()}
    if PLUGIN_FILE not in present or not (present <= ours):
        strangers = sorted(present - ours) or [f"no {PLUGIN_FILE}"]
        raise GimpInstallError(f"{dest} holds files this tool did not install ({', '.join(strangers)}); "
                               "remove it yourself")
    try:
        shutil.rmtree(dest)
    except OSError as exc:
        raise GimpInstallError(f"cannot remove {dest}: {exc.strerror or exc}") from None
    return dest
