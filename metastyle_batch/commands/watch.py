"""`metastyle-batch watch`: a thin shell over :mod:`metastyle_batch.watch` (the daemon, journal and config)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import DEVICES, INTERRUPTED, echo_err, guarded, load_stylizer, one_line, parse_format, usage_error


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(watch)


def watch(
    in_dir: Annotated[Optional[Path], typer.Argument(
        metavar="IN_DIR", show_default=False, help="Folder to watch (subfolders too, unless --no-recursive).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", metavar="OUT_DIR", show_default=False,
        help="Where results go, as OUT_DIR/<relative path>/<name>.<ext>. May lie inside IN_DIR.")] = None,
    style: Annotated[Optional[Path], typer.Option(
        "--style", "-s", metavar="FILE", show_default=False,
        help="Style image. Edit or replace it while the daemon runs and new files get the new style.")] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", "-c", metavar="FILE", show_default=False,
        help="TOML file with several \\[\\[folder]] tables, each with its own in, out, style and options.")] = None,
    strength: Annotated[Optional[float], typer.Option(
        min=0.0, max=1.0, show_default=False, help="How much style: 1 = full (default), 0 = (almost) the photo.")] = None,
    preserve_color: Annotated[Optional[bool], typer.Option(
        "--preserve-color", show_default=False, help="Keep the photo's colours; take only brightness patterns from the style.")] = None,
    max_side: Annotated[Optional[int], typer.Option(
        min=1, metavar="N", show_default=False, help="Downscale so the longer side is at most N pixels.")] = None,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", "-f", metavar="png|jpg|webp|tiff", show_default=False,
        help="Output format. Default: each input's own format.")] = None,
    quality: Annotated[Optional[int], typer.Option(
        min=1, max=100, metavar="N", show_default=False, help="JPEG/WebP quality (default 95).")] = None,
    video_quality: Annotated[Optional[int], typer.Option(
        "--video-quality", min=1, max=100, metavar="N", show_default=False,
        help="H.264 quality for videos (default 65, visually near-lossless).")] = None,
    recursive: Annotated[bool, typer.Option(
        "--recursive/--no-recursive", help="Also watch subfolders (outputs mirror them).")] = True,
    failed_dir: Annotated[Optional[Path], typer.Option(
        "--failed-dir", metavar="DIR", show_default=False,
        help="Move inputs that cannot be processed here (their error stays in the journal).")] = None,
    journal: Annotated[Optional[Path], typer.Option(
        "--journal", metavar="FILE", show_default=False,
        help="The sqlite journal. Default: OUT_DIR/.metastyle-watch.sqlite3 (per folder).")] = None,
    device: Annotated[Optional[str], typer.Option(metavar="NAME", show_default=False, help=f"Where to compute: {DEVICES} (default auto).")] = None,
    model: Annotated[Optional[Path], typer.Option(
        metavar="PATH", show_default=False, help="Meta network file (default: $METASTYLE_MODEL or the shipped model).")] = None,
    settle: Annotated[Optional[float], typer.Option(
        min=0.0, metavar="SECONDS", show_default=False,
        help="A file is read once its size and mtime have not changed for this long (default 2; 0.5 after a "
             "close-write event).")] = None,
    retries: Annotated[Optional[int], typer.Option(
        min=0, metavar="N", show_default=False, help="Retries for transient errors, with backoff (default 3).")] = None,
    once: Annotated[bool, typer.Option(
        "--once", help="Process what is there (the backlog) and exit; for cron. Exit 1 if a file failed.")] = False,
    status: Annotated[bool, typer.Option(
        "--status", help="Report from the journal (done, failed, pending) and exit; works while the daemon runs.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --status: print one JSON object.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more (debug messages).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log only warnings and errors.")] = False,
) -> None:
    """Watch folders and stylize every image (and video) that lands in them — exactly once, even across crashes.

    Files already there are processed first. A file is read only when it is complete (unchanged for --settle seconds, or closed by its writer); hidden and temporary files and the daemon's own outputs are ignored. A journal (OUT_DIR/.metastyle-watch.sqlite3) records every file, so after a crash, [italic]kill -9[/italic] or a reboot nothing is lost or done twice, and outputs are never visible half-written. A bad file is recorded (and optionally moved to --failed-dir); it never stops the daemon. SIGTERM or Ctrl-C stops after the current file.

    [bold]Examples[/bold]

      metastyle-batch watch ~/drop --out ~/drop/styled --style wave.jpg --max-side 2048

      metastyle-batch watch --config ~/.config/metastyle/watch.toml

      metastyle-batch watch ~/drop --out ~/styled --style wave.jpg --once

      metastyle-batch watch --config watch.toml --status
    """
    from ..watch import (
        FolderSpec,
        WatchDaemon,
        WatchError,
        folder_status,
        install_signal_handlers,
        load_config,
    )

    per_folder = {"--strength": strength, "--preserve-color": preserve_color, "--max-side": max_side,
                  "--format": fmt, "--quality": quality, "--video-quality": video_quality, "--failed-dir": failed_dir}
    options: dict = {}
    if config is not None:
        given = [name for name, value in (("IN_DIR", in_dir), ("--out", out), ("--style", style)) if value is not None]
        given += [name for name, value in per_folder.items() if value is not None]
        if given or not recursive:
            given += [] if recursive else ["--no-recursive"]
            usage_error(f"with --config, set {', '.join(given)} in the config file's [[folder]] tables instead")
        with guarded():  # a WatchError is a usage error (exit 2)
            cfg = load_config(config)
        specs = cfg.folders
        if journal is not None:
            for s in specs:
                s.journal = journal
        options = {"device": cfg.device, "model": cfg.model, "settle": cfg.settle, "retries": cfg.retries,
                   "retry_delay": cfg.retry_delay, "rescan": cfg.rescan}
    else:
        if in_dir is None or out is None:
            usage_error("give IN_DIR and --out OUT_DIR (and --style FILE), or --config FILE")
        if style is None and not status:
            usage_error("missing --style FILE (the style image to apply)")
        specs = [FolderSpec(
            in_dir=in_dir, out_dir=out, style=style, strength=1.0 if strength is None else strength,
            preserve_color=bool(preserve_color), max_side=max_side, format=parse_format(fmt),
            quality=95 if quality is None else quality, video_quality=video_quality, recursive=recursive, failed_dir=failed_dir, journal=journal)]

    if status:
        with guarded():
            resolved = [s.resolved(require_style=False) for s in specs]
            try:
                report = [folder_status(s) for s in resolved]
            except WatchError:
                raise
            except Exception as exc:  # a damaged journal file (sqlite3.DatabaseError)
                usage_error(f"cannot read the journal: {one_line(exc)}")
        _print_status(report, as_json)
        return

    _setup_logging(verbose, quiet)
    for key, value in (("device", device), ("model", model), ("settle", settle), ("retries", retries)):
        if value is not None:
            options[key] = value
    with guarded():
        daemon = WatchDaemon(specs, **{k: options[k] for k in ("settle", "retries", "retry_delay", "rescan")
                                       if options.get(k) is not None})
        daemon.acquire()  # a second daemon on the same journal fails here, before the model loads
    daemon.stylizer = load_stylizer(options.get("model"), options.get("device") or "auto", log=echo_err)
    restore = install_signal_handlers(daemon)
    with guarded():
        try:
            summary = daemon.run(once=once)
        except KeyboardInterrupt:  # a second signal: stop now (outputs are atomic; the journal settles the rest)
            echo_err("Stopped at once; the interrupted file is redone on the next start.")
            raise typer.Exit(INTERRUPTED) from None
        finally:
            restore()
    if once and summary.failed:
        raise typer.Exit(1)


class _LineHandler(logging.Handler):
    """For journald and log files: one line per message through rich (no padding, no wrapping)."""

    _STYLES = {"DEBUG": "dim", "WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold red"}

    def __init__(self, console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        from rich.text import Text

        try:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
            self.console.print(Text.assemble((when, "dim"), " ", (f"{record.levelname:<7}", self._STYLES.get(record.levelname, "")),
                                             " ", self.format(record)), soft_wrap=True)
        except Exception:
            self.handleError(record)


def _setup_logging(verbose: bool, quiet: bool) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False,
                                               log_time_format="[%Y-%m-%d %H:%M:%S]")
    else:
        handler = _LineHandler(console)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("metastyle_batch.watch")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def _print_status(report: list[dict], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"folders": report}, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.text import Text

    out = Console(highlight=False, soft_wrap=True)
    for f in report:
        pid = f["daemon_pid"]
        running = "daemon not running" if pid is None else f"daemon running (pid {pid})" if pid else "daemon running"
        out.print(Text.assemble((f["name"], "bold"), f"  {f['in']} -> {f['out']}  ({running})"))
        retrying = f" ({f['retrying']} retrying)" if f["retrying"] else ""
        out.print(Text.assemble("  done ", (str(f["done"]), "green"), "   failed ", (str(f["failed"]), "red" if f["failed"] else ""),
                                f"   pending {f['pending']}{retrying}   unsupported {f['unsupported']}"))
        out.print(f"  journal {f['journal'] if f['journal_exists'] else '(none yet)'}", markup=False)
        for item in f["failures"][:20]:
            moved = f" (moved to {item['moved_to']})" if item["moved_to"] else ""
            out.print(f"  failed: {item['error']}{moved}", markup=False)
        if len(f["failures"]) > 20:
            out.print(f"  … and {len(f['failures']) - 20} more failures in {f['name']}", markup=False)
        for item in f["unsupported_files"][:5]:
            out.print(f"  unsupported: {item['input']}: {item['error']}", markup=False)
