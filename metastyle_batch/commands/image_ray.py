"""`metastyle-batch image --ray`: the image command's batch (and folders of videos) as a Ray Data pipeline.

A thin shell over :mod:`metastyle_batch.distributed`, with the local path's summary, JSON and exit codes (0 all
done, 1 some inputs failed, 2 usage). Outputs that already exist are skipped, so a re-run resumes.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from .common import INTERRUPTED, describe, echo_err, guarded, usage_error


def image_on_ray(address: Optional[str], workers: Optional[int], inputs: list[str], style_paths: list[Path],
                 weights: Optional[list[float]], *, net: Optional[Path], output: Optional[str], strength: float,
                 preserve_color: bool, max_side: Optional[int], device: str, fmt: Optional[str], overwrite: bool,
                 as_json: bool, model: Optional[Path], quality: int, refine: int, palette: float) -> None:
    from .. import distributed as dist

    if not dist.ray_available():
        usage_error(f"--ray needs Ray, which is not installed; install it with: {dist.INSTALL_HINT}")
    if refine:
        usage_error("--refine runs on one machine; refine with `metastyle-batch finetune`, then give --net with --ray")
    if "-" in inputs:
        usage_error("--ray reads files on the cluster, not stdin; give files, folders or patterns")
    if output == "-":
        usage_error("--ray writes files, not stdout; give -o DIR/ (or no -o: next to each input)")
    if model is not None and not model.expanduser().is_file():
        usage_error(f"model file not found: {model}")
    with guarded():
        found = dist.expand(inputs, skip_previous_outputs=output is None)
    if not found.jobs:
        reasons = [f"{a}: {r}" for a, r in found.missing] + found.notes
        usage_error("no input images or videos found (" + "; ".join(reasons) + ")" if reasons
                    else "no input images given")
    with guarded("-o "):
        plan = dist.video_plan(output, found.jobs, found.batch, fmt)
    for note in found.notes:
        echo_err(f"Warning: {note}")

    settings = dist.Settings(styles=[str(p) for p in style_paths], weights=weights, net=str(net) if net else None,
                             model=str(model.expanduser()) if model else None, strength=strength,
                             preserve_color=preserve_color, max_side=max_side, quality=quality, device=device,
                             palette=palette)
    outcomes = _run(found.jobs, plan, settings, overwrite, address, workers)
    order = {id(j): i for i, j in enumerate(found.jobs)}
    outcomes.sort(key=lambda o: order[id(o.job)])
    done = [o for o in outcomes if o.status in ("written", "recovered")]
    skipped = [o for o in outcomes if o.status == "skipped"]
    failed = [{"input": a, "error": f"{a}: {r}"} for a, r in found.missing]
    failed += [{"input": o.job.label, "error": describe(o.error)} for o in outcomes if o.error is not None]
    if as_json:
        ran = [o for o in done if o.worker]
        typer.echo(json.dumps({
            "outputs": [_row(o) for o in done], "skipped": [{"input": o.job.label, "output": str(o.output)}
                                                            for o in skipped],
            "failed": failed, "model": ran[0].model if ran else None,
            "device": ran[0].device if ran else None,
            "workers": sorted({o.worker for o in ran})}, ensure_ascii=False))
    if len(done) == 1 and not failed and not skipped:
        r = _row(done[0])
        echo_err(f"Wrote {r['output']} ({r['width']}x{r['height']}, {r['ms']} ms)")
    else:
        skip = f"{len(skipped)} skipped (already there; --overwrite replaces them), " if skipped else ""
        echo_err(f"{len(done)} done, {skip}{len(failed)} failed" + (":" if failed else "."))
        for f in failed:
            echo_err(f"  {f['error']}")
    if failed:
        raise typer.Exit(1)


def _row(o) -> dict[str, Any]:
    from .image import _row as image_row

    row = image_row(o)
    if o.kind == "video":
        row["frames"] = o.frames
    row["worker"] = o.worker
    return row


def _run(jobs, plan, settings, overwrite: bool, address: Optional[str], workers: Optional[int]) -> list:
    """The cluster run with a progress bar on a terminal; Ray's own messages go to stderr, never into stdout."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from .. import distributed as dist

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    show_bar = len(jobs) > 1 and err.is_terminal
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    outcomes: list = []
    with guarded():
        try:
            with _native_stderr_quiet(), contextlib.redirect_stdout(sys.stderr), \
                    Progress(*columns, console=err, disable=not show_bar, transient=True) as bar:
                task = bar.add_task("stylizing on Ray", total=len(jobs))
                for outcome in dist.run(jobs, plan, settings, overwrite=overwrite, address=address, workers=workers,
                                        log=lambda m: bar.console.print(m, markup=False)):
                    outcomes.append(outcome)
                    if show_bar and outcome.status == "written":
                        bar.console.print(f"{outcome.job.label} -> {outcome.output}", markup=False)
                    bar.advance(task)
        except KeyboardInterrupt:
            echo_err(f"Interrupted: {sum(o.error is None for o in outcomes)} done; outputs are whole or absent "
                     "(run again to resume).")
            raise typer.Exit(INTERRUPTED) from None
    return outcomes


@contextlib.contextmanager
def _native_stderr_quiet():
    """Ray's C++ core writes notes to file descriptor 2 (e.g. one ``E ... core_worker.cc`` line per actor, also in
    its own log files): send that descriptor to /dev/null for the run, Python's ``sys.stderr`` to the real one."""
    import io
    import os

    try:
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    old = sys.stderr
    try:
        own = old.fileno() == 2
    except (AttributeError, OSError, ValueError):
        own = False
    if own:
        old.flush()
        sys.stderr = io.TextIOWrapper(open(saved, "wb", buffering=0, closefd=False), encoding=old.encoding,
                                      errors="backslashreplace", write_through=True)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sys.stderr = old
