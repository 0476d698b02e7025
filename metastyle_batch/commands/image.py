"""`metastyle-batch image`: a thin shell over :mod:`metastyle_batch.batch` (planning, the overlapped run) and
:class:`metastyle_batch.engine.Stylizer` (the pixels)."""

from __future__ import annotations

import json
import os
import select
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .. import batch, netcache
from ..errors import OutputError, OutputExistsError
from ..color import PALETTE_STRENGTH
from .common import DEVICES as _DEVICES
from .common import (INTERRUPTED, check_device, check_image_file, describe, echo_err, encode_style, guarded, load_stylizer, parse_format,
                     refine_network, require_torch_option, usage_error)


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(image)


def _parse_mix(value: Optional[str], n_styles: int) -> Optional[list[float]]:
    if value is None:
        return None
    try:
        weights = [float(w) for w in value.replace(";", ",").split(",") if w.strip()]
    except ValueError:
        usage_error(f"--mix {value!r} is not a comma-separated list of numbers (e.g. --mix 0.7,0.3)")
    if len(weights) != n_styles:
        usage_error(f"--mix has {len(weights)} weight(s) but there are {n_styles} --style image(s); give one weight per style")
    from ..codes import normalized  # numpy: not at import, so --help stays instant

    try:
        return normalized(weights)
    except ValueError:
        usage_error(f"--mix weights must be finite, non-negative and not all zero, got {value!r}")


def _write_stdout(data: bytes) -> None:
    """Every byte to stdout's file descriptor, waiting while a non-blocking pipe is full; a reader that goes away
    early (``| head -c 100``) is a failure of this output (exit 1), never a silent success."""
    stream = typer.get_binary_stream("stdout")
    stream.flush()
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):  # an in-memory stream (an embedding host, a test runner)
        stream.write(data)
        stream.flush()
        return
    view = memoryview(data)
    try:
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:  # O_NONBLOCK stdout whose pipe is full: wait until the reader drains it
                select.select([], [fd], [], 1.0)
    except BrokenPipeError:
        try:  # nothing more can reach the reader; keep Python's exit-time flush from failing on the dead pipe
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
        except OSError:
            pass
        raise OutputError(f"stdout was closed after {len(data) - len(view)} of {len(data)} bytes") from None


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
        help="A per-style network from `metastyle-batch finetune`, instead of --style (used as trained: no "
             "palette transfer).")] = None,
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
    palette: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="How far the colours move to the style's palette after the network (mean and "
                               "covariance transfer; 0 = the network's own colours).")] = PALETTE_STRENGTH,
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
    ray: Annotated[bool, typer.Option(
        "--ray", help="Run the batch on a Ray cluster (pip install 'metastyle-batch\\[ray]'): a new local one, or the "
                      "one at --ray-address / $RAY_ADDRESS. Videos in the inputs are stylized too, one per task; "
                      "outputs that exist are skipped, so a re-run resumes.")] = False,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", metavar="ADDR", help="Join this Ray cluster (implies --ray): auto (one started with "
                                              "`ray start` here), HOST:6379 or ray://HOST:10001.")] = None,
    ray_workers: Annotated[Optional[int], typer.Option(
        "--ray-workers", min=1, metavar="N", help="Stylizer workers on Ray (implies --ray; default: one per GPU of "
                                                  "the cluster, else one per CPU).")] = None,
) -> None:
    """Stylize images with one or more style images.

    The network is built once per run, so large batches are fast. Alpha is kept, animated GIF/WebP are stylized frame by frame, EXIF rotation is applied, and a bad file is reported without stopping the batch. Exit status: 0 all done, 1 some inputs failed, 2 usage error (every output exists already, without --overwrite, is one).

    [bold]Examples[/bold]

      metastyle-batch image photo.jpg --style wave.jpg

      metastyle-batch image holiday/ 'extra/*.png' -s wave.jpg -s scream.jpg --mix 0.7,0.3 -o out/

      cat in.png | metastyle-batch image - -s wave.jpg --strength 0.6 > out.png

      metastyle-batch image archive/ clips/ -s wave.jpg -o out/ --ray
    """
    out_fmt = parse_format(fmt)
    if bool(style) == bool(net):
        usage_error("give either --style (one or more) or --net")
    if net is not None and strength != 1.0:
        usage_error("--strength needs --style: a fine-tuned network (--net) has no style code to weaken")
    if refine and (len(style or []) != 1 or strength != 1.0):
        usage_error("--refine needs exactly one --style and no --strength (it trains against that style image)")
    if refine:
        require_torch_option("--refine")
    style_paths = [check_image_file(s, option="--style") for s in style or []]
    weights = _parse_mix(mix, len(style_paths))
    check_device(device)
    if ray or ray_address or ray_workers:  # the same batch as a Ray Data pipeline (metastyle_batch.distributed)
        from .image_ray import image_on_ray

        return image_on_ray(ray_address, ray_workers, inputs, style_paths, weights, net=net, output=output,
                            strength=strength, preserve_color=preserve_color, max_side=max_side, device=device,
                            fmt=out_fmt, overwrite=overwrite, as_json=as_json, model=model, quality=quality,
                            refine=refine, palette=palette)
    with guarded():
        found = batch.expand_inputs(inputs, skip_previous_outputs=output is None)
    if not found.jobs:
        reasons = [f"{a}: {r}" for a, r in found.missing] + found.notes
        usage_error("no input images found (" + "; ".join(reasons) + ")" if reasons else "no input images given")
    jobs = found.jobs
    stdin = jobs[0].path is None
    if stdin and typer.get_text_stream("stdin").isatty():
        usage_error("'-' reads an image from stdin, but stdin is a terminal; pipe one in (e.g. < photo.jpg)")
    if refine and stdin:
        usage_error("--refine reads the inputs twice (to train, then to stylize); give files, not stdin")
    with guarded("-o "):
        plan = batch.plan_outputs(output, jobs, found.batch, out_fmt)
    if plan.mode == "stdout":
        if as_json:
            usage_error("--json prints to stdout, but stdout would carry the image; give -o FILE or -o DIR/")
        if typer.get_text_stream("stdout").isatty():
            usage_error("refusing to write binary image data to a terminal; redirect stdout (> out.png) or give -o FILE")
    for note in found.notes:
        echo_err(f"Warning: {note}")

    from rich.console import Console

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    cache_key, model_id = None, None
    if not (net or refine or preserve_color or max_side or strength < 1.0) and netcache.usable(device):
        cache_key, model_id = _cache_key(model, style_paths, weights)
    engine: dict[str, Any] = {}

    def load_engine() -> None:
        """The engine: the meta network, the style code, its generated network (cached for next time)."""
        engine["stylizer"] = stylizer = load_stylizer(model, device, log=echo_err, torch=bool(refine))
        stylizer.palette = palette
        with guarded():
            engine["code"] = _style_code(stylizer, net, style_paths, weights, need_vgg=strength < 1.0)
        if refine:
            from ..train.data import load_images

            photos = load_images([j.path for j in jobs][:16], log=lambda _: None)  # bad ones: the batch reports them
            if not photos:
                usage_error("--refine found no readable input image to train on")
            engine["palette_from"] = engine["code"]
            engine["code"] = refine_network(stylizer, style_paths[0], photos, refine, err)
        if cache_key:
            colors = engine["code"].colors
            engine["colors"] = None if colors is None else colors.tolist()
            engine["onnx"] = stylizer.onnx_bytes(engine["code"])
            netcache.store(cache_key, engine["onnx"], engine["colors"])

    def with_engine(picture):
        if not engine:
            load_engine()
        return engine["stylizer"].stylize_picture(picture, engine["code"], strength, preserve_color, max_side,
                                                  palette_from=engine.get("palette_from"))

    cached = netcache.CachedNetwork.load(cache_key, with_engine, palette) if cache_key else None
    if cached is None:
        load_engine()
        model_id, where = engine["stylizer"].model_id, str(engine["stylizer"].device)
        if cache_key:  # this run's pixels from the same ONNX Runtime graph as every later run of the style
            cached = netcache.CachedNetwork(engine["onnx"], engine["colors"], with_engine, palette)
    else:
        where = "cpu"
    outcomes = _run(jobs, plan, cached.stylize_picture if cached else with_engine, overwrite, quality, err)
    done = [o for o in outcomes if o.error is None]
    failed = [{"input": a, "error": f"{a}: {r}"} for a, r in found.missing]
    failed += [{"input": o.job.label, "error": describe(o.error)} for o in outcomes if o.error is not None]
    if as_json:
        typer.echo(json.dumps({"outputs": [_row(o) for o in done], "failed": failed, "model": model_id,
                               "device": where}, ensure_ascii=False))
    if len(done) == 1 and not failed and done[0].output is not None:
        r = _row(done[0])
        echo_err(f"Wrote {r['output']} ({r['width']}x{r['height']}, {r['ms']} ms)")
    elif len(jobs) + len(found.missing) > 1 or failed:
        echo_err(f"{len(done)} done, {len(failed)} failed" + (":" if failed else "."))
        for f in failed:
            echo_err(f"  {f['error']}")
    if failed:  # every output already there (and nothing else wrong): a usage error, as for video and export
        exists_only = not done and not found.missing and all(isinstance(o.error, OutputExistsError) for o in outcomes)
        raise typer.Exit(2 if exists_only else 1)


def _cache_key(model: Path | None, styles: list[Path], weights: list[float] | None) -> tuple[str | None, str | None]:
    """The generated-network cache key and the model id, from a model that passed its sha256 check; (None, None)
    when it does not, or a file cannot be read (the engine then reports it properly)."""
    from ..model.io import ModelError, verified_sha256
    from ..paths import default_model_path

    try:
        digest = verified_sha256(model or default_model_path())
        return netcache.key(digest, styles, weights), digest[:12]
    except (OSError, ModelError):
        return None, None


def _style_code(stylizer, net: Path | None, styles: list[Path], weights: list[float] | None, need_vgg: bool):
    """The style code (or the --net network) every image of the run uses; a bad style is a usage error."""
    if net is not None:
        return stylizer.load_net(net)
    code = encode_style(stylizer, styles, weights)
    if need_vgg:  # strength < 1 encodes each content image too: fail now, not once per file
        stylizer.vgg  # noqa: B018 - loads it
    return code


def _row(o: batch.Outcome) -> dict[str, Any]:
    return {"input": o.job.label, "output": "-" if o.output is None else str(o.output),
            "width": o.size[0], "height": o.size[1], "ms": o.ms}


def _run(jobs: list[batch.Job], plan: batch.OutputPlan, stylize, overwrite: bool, quality: int,
         err) -> list[batch.Outcome]:
    """The overlapped batch with a progress bar on a terminal; Ctrl-C stops it with nothing half-written."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    show_bar = len(jobs) > 1 and err.is_terminal
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    outcomes: list[batch.Outcome] = []
    try:
        with Progress(*columns, console=err, disable=not show_bar, transient=True) as bar:
            task = bar.add_task("stylizing", total=len(jobs))
            for outcome in batch.run(jobs, plan, stylize, overwrite=overwrite, quality=quality,
                                     read_stdin=typer.get_binary_stream("stdin").read, write_stdout=_write_stdout):
                outcomes.append(outcome)
                if show_bar and outcome.error is None:
                    bar.console.print(f"{outcome.job.label} -> {_row(outcome)['output']}", markup=False)
                bar.advance(task)
    except KeyboardInterrupt:
        echo_err(f"Interrupted: {sum(o.error is None for o in outcomes)} done; no partial files were left behind.")
        raise typer.Exit(INTERRUPTED) from None
    return outcomes
