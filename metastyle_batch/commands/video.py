"""`metastyle-batch video`: a thin Typer shell over :func:`metastyle_batch.video.stylize_video`.

Exit status: 0 done; 1 processing failed (nothing written); 2 usage error (missing style, bad keyframe spec,
unreadable or not-a-video input, existing output without --overwrite, model/VGG weights missing);
130 interrupted with Ctrl-C (the temp file is removed, OUT is untouched).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..color import PALETTE_STRENGTH
from .common import (DEVICES, check_image_file, echo_err, fail, guarded, load_stylizer, one_line, refine_network,
                     require_torch_option, usage_error)


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(video)


def _check_style(path: str, what: str) -> str:
    hint = " (separate keyframes with commas)" if what == "--keyframes" and ";" in path else ""
    prefix = "--keyframes: " if what == "--keyframes" else ""
    return str(check_image_file(path, prefix + "style image", option=what, hint=hint))


def _default_output(src: Path) -> Path:
    from ..video import OUTPUT_FORMATS

    ext = src.suffix if src.suffix.lower() in OUTPUT_FORMATS else ".mp4"
    return src.with_name(f"{src.stem}_stylized{ext}")


def _progress_bar(console, enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class _Rate(ProgressColumn):
        def render(self, task):  # type: ignore[override]
            speed = task.finished_speed or task.speed
            return Text(f"{speed:5.1f} frames/s" if speed else "  ?   frames/s")

    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    _Rate(), TextColumn("ETA"), TimeRemainingColumn(), TimeElapsedColumn(),
                    console=console, disable=not enabled, transient=True)


def video(
    src: Annotated[Path, typer.Argument(metavar="IN", show_default=False, help="Video file to stylize.")],
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", metavar="OUT", show_default=False,
        help="Output video (.mp4, .m4v, .mov or .mkv). Default: IN_stylized.mp4 next to IN.")] = None,
    style: Annotated[Optional[str], typer.Option(
        "--style", "-s", metavar="FILE", show_default=False,
        help="Style image for the whole video (or the start, with --to / --keyframes).")] = None,
    to: Annotated[Optional[str], typer.Option(
        "--to", metavar="FILE", show_default=False,
        help="Second style: the style moves from --style at the first frame to this one at the last.")] = None,
    keyframes: Annotated[Optional[str], typer.Option(
        "--keyframes", "-k", metavar="SPEC", show_default=False,
        help="Styles at positions: '0:a.jpg,5s:b.jpg,80%:c.jpg' (frame numbers, seconds or percent); "
             "in between the style is interpolated.")] = None,
    ease: Annotated[str, typer.Option(metavar="linear|smooth", help="Interpolation between keyframes.")] = "linear",
    strength: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="How much style: 1 = full, 0 = (almost) the footage itself.")] = 1.0,
    preserve_color: Annotated[bool, typer.Option(
        "--preserve-color", help="Keep the footage's colours; take only brightness patterns from the style.")] = False,
    palette: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="How far each frame's colours move to the style's palette after the network "
                               "(0 = the network's own colours).")] = PALETTE_STRENGTH,
    stabilize: Annotated[bool, typer.Option(
        "--stabilize", help="Calm the shimmer in still parts of the shot: where the footage does not change, "
                            "hold the previous result (moving parts stay fresh).")] = False,
    refine: Annotated[int, typer.Option(
        min=0, metavar="N", help="Good on demand: fine-tune the generated network for N steps on 16 frames spread "
                                 "over the clip first (one --style; 100 steps ≈ 1-2 min on a CPU), then use it "
                                 "for every frame.")] = 0,
    batch: Annotated[Optional[int], typer.Option(
        min=1, metavar="N", help="Frames per forward pass (default: 8 on a GPU, 2 on the CPU).")] = None,
    max_side: Annotated[Optional[int], typer.Option(
        min=16, metavar="N", help="Downscale so the longer side is at most N pixels (default: keep the size).")] = None,
    quality: Annotated[int, typer.Option(
        min=1, max=100, metavar="Q",
        help="H.264 quality 1-100, higher is better: 65 = CRF 18 (near-lossless), 55 = CRF 23.")] = 65,
    device: Annotated[str, typer.Option(metavar="NAME", help=f"Where to compute: {DEVICES}.")] = "auto",
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing OUT (the input is never replaced).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
    model: Annotated[Optional[Path], typer.Option(
        metavar="PATH", help="Meta network file (default: $METASTYLE_MODEL or the shipped model).")] = None,
) -> None:
    """Stylize a video with one style, a transition (--to) or keyframed styles.

    Frame rate (exactly, e.g. 30000/1001), frame count and size are kept, phone rotation is applied once, and the audio is copied. Variable-frame-rate clips are written at their average rate. The output appears only when complete. Exit status: 0 done, 1 processing failed, 2 usage error, 130 interrupted.

    [bold]Examples[/bold]

      metastyle-batch video clip.mp4 -o out.mp4 --style wave.jpg

      metastyle-batch video clip.mp4 -o out.mp4 --style wave.jpg --to scream.jpg --ease smooth --stabilize

      metastyle-batch video clip.mp4 -o out.mp4 --keyframes "0:a.jpg,5s:b.jpg,80%:c.jpg"

      metastyle-batch video clip.mp4 -o out.mp4 --style wave.jpg --refine 100
    """
    with guarded():
        _video(src, output, style, to, keyframes, ease, strength, preserve_color, palette, stabilize, refine, batch,
               max_side, quality, device, overwrite, as_json, model)


def _keys(style: str | None, to: str | None, keyframes: str | None, ease: str) -> list:
    """The keyframes the options ask for, every style file checked; usage errors for bad combinations."""
    from ..video import (
        Keyframe,
        KeyframeError,
        fixed_style,
        parse_keyframes,
        transition,
    )

    if ease not in ("linear", "smooth"):
        usage_error(f"--ease {ease!r}: use linear or smooth")
    if to is not None and keyframes is not None:
        usage_error("use either --to or --keyframes, not both")
    if to is not None and style is None:
        usage_error("--to needs --style (the style at the first frame)")
    if style is None and keyframes is None:
        usage_error("give a style: --style FILE (optionally with --to FILE) or --keyframes SPEC")
    if to is not None:
        return transition(_check_style(style, "--style"), _check_style(to, "--to"))
    if keyframes is None:
        return fixed_style(_check_style(style, "--style"))
    try:
        keys = parse_keyframes(keyframes)
    except KeyframeError as exc:
        usage_error(f"--keyframes: {one_line(exc)}")
    keys = [Keyframe(k.value, k.unit, _check_style(k.style, "--keyframes"), k.text) for k in keys]
    if style is not None:
        if any(k.value == 0 for k in keys):
            usage_error("--style and --keyframes both set the style at frame 0; drop one of them")
        keys = [Keyframe(0, "f", _check_style(style, "--style"), "--style")] + keys
    return keys


def _refined(stylizer, info, style: str, steps: int, console) -> dict:
    """``--refine``: the style's network fine-tuned on frames spread over the clip."""
    import torch

    from ..video.sample import sample_frames

    frames = [torch.from_numpy(f.copy()).permute(2, 0, 1) for f in sample_frames(info)]
    return refine_network(stylizer, Path(style), frames, steps, console)


def _video(src, output, style, to, keyframes, ease, strength, preserve_color, palette, stabilize, refine, batch,
           max_side, quality, device, overwrite, as_json, model) -> None:
    from ..errors import MetastyleError
    from ..images import ImageError, format_for_path
    from ..video import (
        KeyframeError,
        VideoInputError,
        check_destination,
        output_format,
        probe,
        resolve_keyframes,
        stylize_video,
    )

    # ---- arguments (cheap checks first: nothing is loaded before they pass)
    keys = _keys(style, to, keyframes, ease)
    if refine and (to is not None or keyframes is not None or strength != 1.0):
        usage_error("--refine needs one --style for the whole clip and no --strength (it trains against that style)")
    if refine:
        require_torch_option("--refine")
    src = src.expanduser()
    dst = (output.expanduser() if output is not None else _default_output(src))
    try:
        output_format(dst)
    except ValueError as exc:
        usage_error(one_line(exc))
    try:
        info = probe(src)
    except VideoInputError as exc:
        usage_error(f"{exc} (use `metastyle-batch image`)" if format_for_path(src) else str(exc))
    if keyframes is not None:
        try:
            resolve_keyframes(keys, info.frames, info.fps)
        except KeyframeError as exc:
            usage_error(f"--keyframes: {one_line(exc)}")
    check_destination(src, dst, overwrite)  # exists / is the input / a folder: guarded() makes it a usage error

    # ---- model, styles, run
    from rich.console import Console

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    stylizer = load_stylizer(model, device, torch=bool(refine))
    network = _refined(stylizer, info, keys[0].style, refine, err) if refine else None
    bar = _progress_bar(err, enabled=err.is_terminal and not as_json)
    try:
        with bar:
            task = bar.add_task(src.name[:30], total=info.frames)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            stats = stylize_video(stylizer, src, dst, keys, ease=ease, strength=strength,
                                  preserve_color=preserve_color, palette=palette, stabilize=stabilize, batch=batch,
                                  max_side=max_side, quality=quality, overwrite=overwrite, info=info,
                                  progress=progress, network=network)
    except ImageError as exc:
        usage_error(f"style image {exc}")
    except (MetastyleError, OSError):
        raise  # guarded(): the error's own exit_code
    except Exception as exc:  # torch / unexpected: one line, exit 1
        fail(f"{src}: {type(exc).__name__}: {one_line(exc)}")

    for w in stats["warnings"]:
        echo_err(f"Warning: {w}")
    if as_json:
        summary = {k: stats.get(k) for k in ("output", "input", "frames", "fps", "seconds", "frames_per_second",
                                                "flicker", "stabilize", "width", "height", "audio", "vfr", "rotation", "crf",
                                                "elapsed_s", "warnings")}
        summary.update(model=stylizer.model_id, device=str(stylizer.device))
        typer.echo(json.dumps(summary, ensure_ascii=False))
    flick = (f", flicker {stats['flicker']:.2f}x the source's" if stats.get("flicker") is not None else "")
    echo_err(f"Wrote {stats['output']} ({stats['frames']} frames, {stats['width']}x{stats['height']}, "
             f"{stats['fps']} fps, {stats['seconds']:.2f} s, {stats['frames_per_second']:.1f} frames/s{flick})")
