"""Batches beyond one machine: the image batch (and folders of videos) as a Ray Data pipeline.

Ray (``pip install "metastyle-batch[ray]"``) is optional; nothing here imports it before :func:`run` does.
The pipeline is the local batch's, spread over a cluster:

* **listing** (the driver): :func:`expand` finds the images (:func:`metastyle_batch.batch.expand_inputs`) and the
  videos; :func:`plan_tasks` names every output with the local naming policy (:func:`batch.output_path`) and
  guards it with :class:`batch.OutputGuard` (never an input, no two inputs on one output). An output that
  already exists is *skipped* unless ``overwrite``: a re-run resumes where the last one stopped. The style code
  is computed once, here (:func:`prepare`, while the cluster starts), so every worker runs the same network.
* **read/decode → stylize → write** (the workers): ``map_batches`` over a dataset of task chunks (paths, never
  pixels, so the object store stays small) with a stateful actor, :class:`_Worker`: one
  engine per worker (:func:`metastyle_batch.runtime.open_stylizer`: model and style code loaded once; VGG-16 only
  for a strength below 1), one GPU each when the cluster has GPUs, else ``cpus_per_worker`` CPUs and as many
  ONNX Runtime threads. Inside a chunk the next image is decoded and the previous one encoded while the current one computes.
  Videos are one task each (:func:`metastyle_batch.video.stylize_video`, as the ``video`` command runs it).
* **each output written once**: a new output is hard-linked into place (:func:`paths.atomic_path` with ``exclusive``), which fails
  if anything is there, and an attempt first checks whether the output still is what the planner saw. So when
  Ray restarts a worker that died and retries its tasks, what an earlier attempt already wrote is reported as
  done, not written again. A chunk that fails on every attempt is retried once more file by file, so a file
  that crashes its worker is reported, not fatal.

Inputs, outputs, style images and ``--model``/``--net`` files are passed as absolute paths: on a cluster they
must be visible at the same paths on every node (a shared file system). The default model ships inside the
package (a worker whose model differs from the driver's refuses to start); the driver's ``METASTYLE_*``
variables are passed on to workers that do not set their own.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import socket
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from . import batch, netcache
from .batch import Expansion, Job, Outcome, OutputPlan
from .color import PALETTE_STRENGTH
from .errors import MetastyleError, OutputExistsError, one_line
from .formats import format_for_path

__all__ = ["RayError", "RayOutcome", "Settings", "Task", "expand", "is_video_name", "plan_tasks", "ray_available",
           "run", "INSTALL_HINT", "LOCAL_OBJECT_STORE"]

INSTALL_HINT = 'pip install "metastyle-batch[ray]"'
LOCAL_OBJECT_STORE = 200 * 1024 * 1024  # a local cluster's object store: tasks carry paths, not pixels
VIDEO_EXTS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                        ".wmv", ".flv", ".3gp"})
TASK_RETRIES = 2  # a task whose worker died is run up to 1 + this many times
_ENV = ("METASTYLE_MODEL", "METASTYLE_VGG16", "METASTYLE_CACHE", "METASTYLE_ORT")  # handed on to the workers


class RayError(MetastyleError):
    """Ray is missing, the cluster cannot be reached, or the cluster run itself failed."""

    exit_code = 2


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


def is_video_name(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in VIDEO_EXTS


# ==================================================================================================== listing


def expand(args: list[str], skip_previous_outputs: bool = False) -> Expansion:
    """:func:`batch.expand_inputs` plus the videos of the folders and patterns (an explicit file is taken as is)."""
    found = batch.expand_inputs(args, skip_previous_outputs)
    seen = {os.path.realpath(j.path) for j in found.jobs if j.path is not None}
    with_videos: set[str] = set()
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_dir():
            videos = sorted(p for p in path.iterdir() if p.is_file() and is_video_name(p)
                            and not (skip_previous_outputs and p.stem.endswith(batch.SUFFIX)))
        elif not os.path.lexists(path) and glob.has_magic(arg):
            videos = [Path(m) for m in sorted(glob.glob(os.path.expanduser(arg), recursive=True))
                      if os.path.isfile(m) and is_video_name(Path(m))]
        else:
            continue
        for p in videos:
            with_videos.add(arg)
            if (key := os.path.realpath(p)) not in seen:
                seen.add(key)
                found.jobs.append(Job(str(p), p))
    found.notes = [n for n in found.notes if not any(n.startswith(f"{a}: ") for a in with_videos)]
    found.notes = [n.replace("no images", "no images or videos") for n in found.notes]
    return found


def video_plan(output: str | None, jobs: list[Job], several: bool, fmt: str | None = None) -> OutputPlan:
    """:func:`batch.plan_outputs`, except that one video may also go to one video file (``out.mp4``)."""
    from .video import OUTPUT_FORMATS

    if output is not None and len(jobs) == 1 and jobs[0].path is not None and is_video_name(jobs[0].path) \
            and Path(output).suffix.lower() in OUTPUT_FORMATS and not Path(output).is_dir():
        return OutputPlan("file", Path(output).expanduser(), None)
    return batch.plan_outputs(output, jobs, several, fmt)


def video_output_path(job: Job, plan: OutputPlan) -> Path:
    """The local naming policy for a video: ``NAME_stylized.mp4`` beside it or ``DIR/NAME.mp4`` (``.mov``, ``.mkv``,
    ``.m4v`` inputs keep their container, as ``metastyle-batch video`` does)."""
    from .video import OUTPUT_FORMATS

    if plan.mode == "file":
        if plan.path is None or plan.path.suffix.lower() not in OUTPUT_FORMATS:
            raise MetastyleError(job.label, f"a video's output must be a video file ({', '.join(OUTPUT_FORMATS)}) "
                                            "or a folder")
        return plan.path
    named = batch.output_path(job, OutputPlan(plan.mode, plan.path, "png"), "png")
    assert named is not None and job.path is not None
    ext = job.path.suffix if job.path.suffix.lower() in OUTPUT_FORMATS else ".mp4"
    return named.with_name(named.name[:-len(".png")] + ext)


@dataclass
class Task:
    """One input for a worker: absolute paths, and what its output was when planned (``prior``)."""

    index: int
    label: str
    src: str
    kind: str  # "image" or "video"
    dest: str
    prior: list[int] | None = None  # (dev, inode, mtime_ns, size) of an output that is to be replaced
    shown: str = ""  # the output as the user's arguments name it (relative stays relative)


def _identity(path: str | os.PathLike) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size]


def _sniff(path: Path) -> str | None:
    """The image format from the header alone (what :func:`images.read_image` will report), None if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            fmt = (im.format or "").lower()
    except Exception:
        return None
    return {"mpo": "jpeg", "jpeg2000": "jp2"}.get(fmt, fmt) or None


@dataclass
class RayOutcome(Outcome):
    """:class:`batch.Outcome` plus what happened: ``written``, ``recovered`` (written by an earlier attempt whose
    worker died), ``skipped`` (the output was already there) or ``failed``; the worker (``host:pid``)."""

    status: str = "written"
    kind: str = "image"
    worker: str = ""
    frames: int = 0
    model: str = ""  # the model id and device the worker used
    device: str = ""


def plan_tasks(jobs: list[Job], plan: OutputPlan, overwrite: bool, threads: int = 16,
               ) -> tuple[list[Task], list[RayOutcome]]:
    """Every job's output, by the local naming policy and guard: (tasks for the workers, outcomes settled
    already: outputs that exist (skipped unless ``overwrite``) and refused ones (failed))."""
    from concurrent.futures import ThreadPoolExecutor

    if any(j.path is None for j in jobs):
        raise MetastyleError("stdin cannot be read on a cluster; give files")
    if plan.mode == "stdout":
        raise MetastyleError("a cluster run writes files; give an output folder")
    guard = batch.OutputGuard(jobs, overwrite=True)  # inputs and collisions; existing outputs are handled here
    images = [j for j in jobs if not is_video_name(j.path)]  # type: ignore[arg-type]
    by_content = plan.format is None and plan.mode != "file"  # the input's own format decides the output's
    with ThreadPoolExecutor(threads) as pool:
        formats = dict(zip(map(id, images), pool.map(lambda j: _sniff(j.path), images))) if by_content else {}
    tasks: list[Task] = []
    settled: list[RayOutcome] = []
    for index, job in enumerate(jobs):
        video = is_video_name(job.path)  # type: ignore[arg-type]
        kind = "video" if video else "image"
        try:
            if video:
                dest = video_output_path(job, plan)
            else:
                guess = formats.get(id(job)) or format_for_path(job.path) or "png"  # type: ignore[arg-type]
                dest = batch.output_path(job, plan, batch.output_format(plan, guess))
            assert dest is not None
            guard.claim(job, dest)
            if os.path.isdir(dest):
                raise MetastyleError(job.label, f"output {dest} is a directory")
            prior = _identity(dest) if os.path.lexists(dest) else None
            if prior is not None and not overwrite:
                settled.append(RayOutcome(job, dest, status="skipped", kind=kind))
                continue
        except MetastyleError as exc:
            settled.append(RayOutcome(job, error=batch._failure(job, exc), status="failed", kind=kind))
            continue
        src = os.path.abspath(job.path)  # type: ignore[arg-type]
        tasks.append(Task(index, job.label, src, kind, os.path.abspath(dest), prior, str(dest)))
    return tasks, settled


# ==================================================================================================== workers


@dataclass
class Settings:
    """What every worker needs: the model and styles (absolute paths; None: the worker's shipped model), the
    options of the local run, and the output plan (for the format of an image whose content decides it)."""

    styles: list[str] = field(default_factory=list)
    weights: list[float] | None = None
    code: list[float] | None = None  # the blended style code, computed once by the driver (:func:`prepare`)
    colors: list[float] | None = None  # and its colour moments (metastyle_batch.color)
    model_id: str | None = None  # of the model that code is for: every worker must load the same
    net: str | None = None
    model: str | None = None
    strength: float = 1.0
    preserve_color: bool = False
    palette: float = PALETTE_STRENGTH
    max_side: int | None = None
    quality: int = 95  # images
    video_quality: int | None = None  # None: the video command's default
    device: str = "auto"
    plan_mode: str = "dir"
    plan_path: str | None = None
    plan_format: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def plan(self) -> OutputPlan:
        return OutputPlan(self.plan_mode, Path(self.plan_path) if self.plan_path else None, self.plan_format)


class _Worker:
    """The stateful stylizer of one Ray actor: built once, then called with batches of task chunks."""

    def __init__(self, settings: dict, threads: int = 1):
        for k, v in settings.get("env", {}).items():
            os.environ.setdefault(k, v)
        from .codes import StyleCode
        from .runtime import open_stylizer, uses_torch

        self.s = Settings(**settings)
        self.plan = self.s.plan
        if uses_torch(self.s.device):
            import torch

            torch.set_num_threads(max(1, int(threads)))
            self.stylizer = open_stylizer(self.s.model, self.s.device)
        else:
            self.stylizer = open_stylizer(self.s.model, self.s.device, threads=max(1, int(threads)))
        if self.s.model_id and self.stylizer.model_id != self.s.model_id:
            raise MetastyleError(self.stylizer.model_path, f"this worker's model ({self.stylizer.model_id}) is not the "
                                 f"driver's ({self.s.model_id}); install the same metastyle-batch everywhere or put "
                                 "the model file on a path every node sees")
        if self.s.net:
            self.code = self.stylizer.load_net(self.s.net)
        elif self.s.code is not None:
            self.code = StyleCode(self.s.code, self.s.colors)
        else:
            self.code = self.stylizer.blend(self.s.styles, self.s.weights)
        if self.s.strength < 1.0:
            self.stylizer.vgg  # noqa: B018 - loads it once, not per image
        self.stylizer.palette = self.s.palette
        self.stylize = self._engine
        s = self.s
        if (isinstance(self.code, StyleCode) and s.strength == 1.0 and not s.preserve_color and not s.max_side
                and netcache.usable(s.device)):  # the local CLI's ONNX Runtime path: the same pixels
            colors = None if self.code.colors is None else self.code.colors.tolist()
            self.stylize = netcache.CachedNetwork(self.stylizer.onnx_bytes(self.code), colors, self._engine,
                                                  s.palette).stylize_picture
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.info = {"worker": self.name, "model": self.stylizer.model_id, "device": str(self.stylizer.device)}

    def _engine(self, picture):
        return self.stylizer.stylize_picture(picture, self.code, self.s.strength, self.s.preserve_color,
                                             self.s.max_side)

    def __call__(self, rows: dict) -> dict:
        out: dict[str, list] = {}
        for payload in rows["tasks"]:
            tasks = [Task(**t) for t in json.loads(str(payload))]
            results = self._videos(tasks) if tasks[0].kind == "video" else self._images(tasks)
            for r in results:
                for k, v in {**self.info, **r}.items():
                    out.setdefault(k, []).append(v)
        return out

    # ---- what an earlier attempt did
    def _already(self, t: Task) -> dict | None:
        """The row for an output that an earlier attempt of this task wrote, or None (this attempt writes it)."""
        now = _identity(t.dest)
        if now is None or now == t.prior:
            return None
        width = height = frames = 0
        try:
            if t.kind == "video":
                from .video import probe

                info = probe(t.dest)
                width, height, frames = info.width, info.height, info.frames
            else:
                from PIL import Image

                with Image.open(t.dest) as im:
                    width, height = im.size
        except Exception:
            pass
        return _row(t, "recovered", width=width, height=height, frames=frames)

    # ---- images: decode the next and encode the last while this one computes
    def _images(self, tasks: list[Task]) -> list[dict]:
        from concurrent.futures import ThreadPoolExecutor

        results: list[dict] = []
        with ThreadPoolExecutor(2) as pool:
            loading = pool.submit(self._load, tasks[0])
            writing: deque = deque()
            for k in range(len(tasks)):
                item = loading.result()
                if k + 1 < len(tasks):
                    loading = pool.submit(self._load, tasks[k + 1])
                writing.append(pool.submit(self._store, self._compute(item)))
                while len(writing) > 1:
                    results.append(writing.popleft().result())
            results += [f.result() for f in writing]
        return results

    def _load(self, t: Task):
        from .images import read_image

        t0 = time.perf_counter()
        if (done := self._already(t)) is not None:
            return t, done, t0
        try:
            return t, read_image(t.src, t.label), t0
        except Exception as exc:
            return t, exc, t0

    def _compute(self, item):
        t, picture, t0 = item
        if isinstance(picture, (dict, Exception)):
            return item
        try:
            fmt = batch.output_format(self.plan, picture.format)
            job = Job(t.label, Path(t.src))
            dest = batch.output_path(job, self.plan, fmt)
            if dest is None or os.path.abspath(dest) != t.dest:
                raise MetastyleError(t.label, f"the file changed since the run was planned (it is now {fmt}); "
                                              "run again")
            result = self.stylize(picture)
            result.format = fmt
            return t, result, t0
        except Exception as exc:
            return t, exc, t0

    def _store(self, item) -> dict:
        from .images import encode_image
        from .paths import atomic_path

        t, result, t0 = item
        if isinstance(result, dict):
            return result
        if isinstance(result, Exception):
            return _error(t, result)
        try:
            data = encode_image(result, result.format, quality=self.s.quality)
            if (done := self._already(t)) is not None:  # an attempt that outlived its worker got there first
                return done
            try:
                with atomic_path(t.dest, exclusive=t.prior is None) as tmp:
                    tmp.write_bytes(data)
            except FileExistsError:
                return self._already(t) or _error(t, OutputExistsError(t.label, f"output {t.dest} exists"))
        except Exception as exc:
            return _error(t, exc)
        w, h = result.size
        return _row(t, "written", width=w, height=h, ms=round((time.perf_counter() - t0) * 1000))

    # ---- videos: one per task, as `metastyle-batch video` runs them
    def _videos(self, tasks: list[Task]) -> list[dict]:
        return [self._video(t) for t in tasks]

    def _video(self, t: Task) -> dict:
        from .paths import atomic_path
        from .video import stylize_video

        t0 = time.perf_counter()
        if (done := self._already(t)) is not None:
            return done
        try:
            if isinstance(self.code, dict):
                raise MetastyleError(t.label, "a fine-tuned network stylizes images only; give style images "
                                              "for videos")
            extra = {} if self.s.video_quality is None else {"quality": self.s.video_quality}
            dest = Path(t.dest)
            with atomic_path(dest, exclusive=t.prior is None, suffix=".part" + dest.suffix) as tmp:
                stats = stylize_video(self.stylizer, t.src, tmp, self.code, strength=self.s.strength,
                                      preserve_color=self.s.preserve_color, max_side=self.s.max_side,
                                      overwrite=True, **extra)
        except FileExistsError:
            return self._already(t) or _error(t, OutputExistsError(t.label, f"output {t.dest} exists"))
        except Exception as exc:
            return _error(t, exc)
        return _row(t, "written", width=stats["width"], height=stats["height"], frames=stats["frames"],
                    ms=round((time.perf_counter() - t0) * 1000))


def _row(t: Task, status: str, *, width: int = 0, height: int = 0, ms: int = 0, frames: int = 0,
         error: str = "", error_type: str = "", exit_code: int = 1) -> dict:
    return {"index": t.index, "status": status, "output": t.dest, "width": int(width), "height": int(height),
            "ms": int(ms), "frames": int(frames), "error": error, "error_type": error_type, "exit_code": exit_code}


def _error(t: Task, exc: Exception) -> dict:
    err = batch._failure(Job(t.label, Path(t.src)), exc)
    kind = "exists" if isinstance(err, OutputExistsError) else ""
    return _row(t, "failed", error=err.reason, error_type=kind, exit_code=err.exit_code)


# ==================================================================================================== driver


@contextmanager
def _quiet():
    """Ray's and Ray Data's own chatter off for the run (our progress and summary are the output)."""
    with warnings.catch_warnings():  # Ray's deprecations of its own internal settings
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray(\.|$)")
        import ray.data

        ctx = ray.data.DataContext.get_current()
        keys = ("enable_progress_bars", "print_on_execution_start", "max_errored_blocks")
        saved = {k: getattr(ctx, k) for k in keys}
        loggers = {name: logging.getLogger(name).level for name in ("ray", "ray.data")}
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.max_errored_blocks = -1  # a chunk that failed on every attempt must not stop the others
        for name in loggers:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for k, v in saved.items():
                setattr(ctx, k, v)
            for name, level in loggers.items():
                logging.getLogger(name).setLevel(level)


@contextmanager
def connect(address: str | None = None, num_cpus: int | None = None) -> Iterator[str]:
    """Ray, initialised: the running session if there is one, else ``address`` (``None``: ``$RAY_ADDRESS``, else a
    new local cluster; ``"local"``: always a new one; ``"auto"``, ``HOST:PORT``, ``ray://HOST:10001``: an
    existing cluster). A cluster or connection made here is shut down at the end. Yields what it connected to."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayError(f"Ray is not installed; install it with: {INSTALL_HINT}") from None
    if ray.is_initialized():
        yield "the running Ray session"
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    opts = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        if address == "local":
            ray.init(address="local", num_cpus=num_cpus, object_store_memory=LOCAL_OBJECT_STORE, **opts)
        else:
            ray.init(address=address, **opts)
    except Exception as exc:
        raise RayError(f"cannot start or reach the Ray cluster {address!r}: {type(exc).__name__}: "
                       f"{one_line(exc)}") from None
    try:
        yield "a local Ray cluster" if address == "local" else f"the Ray cluster at {address}"
    finally:
        ray.shutdown()


def _resources(settings: Settings, workers: int | None, cpus_per_worker: int) -> tuple[int, dict, int]:
    """(actors, their resource requests, CPU threads each): a GPU per actor when the cluster has GPUs and the
    device allows, else ``cpus_per_worker`` CPUs."""
    import ray

    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
    dev = settings.device
    if dev.startswith("cuda") and not gpus:
        raise RayError("the device asked for is a GPU, but the Ray cluster has none")
    if gpus and (dev == "auto" or dev.startswith("cuda")):
        settings.device = "cuda"  # the actor's own GPU (Ray sets CUDA_VISIBLE_DEVICES)
        return min(workers or gpus, gpus), {"num_gpus": 1, "num_cpus": 1}, max(1, cpus // gpus)
    if dev != "auto" and dev != "cpu":
        raise RayError(f"device {dev!r} is not available on a Ray cluster; use cpu or cuda")
    settings.device = "cpu"
    fit = max(1, cpus // cpus_per_worker)  # more actors than that would wait for CPUs forever
    return min(workers or fit, fit), {"num_cpus": cpus_per_worker}, cpus_per_worker


def prepare(settings: Settings) -> None:
    """Load the model here once: check it (and a ``net`` file) before any worker does, and compute the blended
    style code for every worker (on the CPU). All workers then run the very same network, equal to what the local
    path computes on this machine, and they need no VGG-16 weights (unless the strength is below 1)."""
    from .runtime import open_stylizer

    stylizer = open_stylizer(settings.model, "cpu")
    settings.model_id = stylizer.model_id
    if settings.net:
        stylizer.load_net(settings.net)
    else:
        code = stylizer.blend(settings.styles, settings.weights)
        settings.code = code.hidden.tolist()
        settings.colors = None if code.colors is None else code.colors.tolist()


def _chunks(tasks: list[Task], workers: int, size: int | None) -> list[list[Task]]:
    """Videos one per chunk (first: they are the long ones), images a few per chunk: enough chunks to keep every
    worker busy to the end, few enough that 200k images are not 200k Ray tasks."""
    videos = [[t] for t in tasks if t.kind == "video"]
    images = [t for t in tasks if t.kind == "image"]
    size = size or max(1, min(64, len(images) // (workers * 8)))
    return videos + [images[i:i + size] for i in range(0, len(images), size)]


def run(jobs: list[Job], plan: OutputPlan, settings: Settings, *, overwrite: bool = False,
        address: str | None = None, workers: int | None = None, cpus_per_worker: int = 1, chunk: int | None = None,
        log: Callable[[str], None] | None = None) -> Iterator[RayOutcome]:
    """Stylize ``jobs`` on a Ray cluster (see :func:`connect` for ``address``); yields one :class:`RayOutcome` per
    job as they finish (settled ones first), each job exactly once. ``workers`` actors (default: one per GPU,
    else one per ``cpus_per_worker`` CPUs of the cluster); ``chunk`` images per Ray task (default: automatic).
    """
    settings = replace(settings, styles=list(settings.styles), env=dict(settings.env))  # the caller's stays as is
    settings.plan_mode, settings.plan_format = plan.mode, plan.format
    settings.plan_path = os.path.abspath(plan.path) if plan.path is not None else None
    settings.styles = [os.path.abspath(s) for s in settings.styles]
    settings.net = os.path.abspath(settings.net) if settings.net else None
    model = settings.model or os.environ.get("METASTYLE_MODEL")  # None: each worker's shipped model
    settings.model = os.path.abspath(os.path.expanduser(model)) if model else None
    settings.env = {**{k: os.environ[k] for k in _ENV if k in os.environ}, **settings.env}
    for k in ("METASTYLE_MODEL", "METASTYLE_VGG16", "METASTYLE_CACHE"):
        if k in settings.env:
            settings.env[k] = os.path.abspath(os.path.expanduser(settings.env[k]))
    tasks, settled = plan_tasks(jobs, plan, overwrite)
    yield from settled
    if not tasks:
        return
    from concurrent.futures import ThreadPoolExecutor

    preparing = ThreadPoolExecutor(1)  # while the cluster starts
    prepared = preparing.submit(prepare, settings) if settings.code is None else None
    preparing.shutdown(wait=False)
    by_index = {t.index: t for t in tasks}
    local_cpus = None
    if workers and not (address or os.environ.get("RAY_ADDRESS")):
        local_cpus = max(os.cpu_count() or 1, workers * cpus_per_worker)
    with connect(address, local_cpus) as where, _quiet():
        import ray.data

        if prepared is not None:
            prepared.result()
        n, remote, threads = _resources(settings, workers, cpus_per_worker)
        left = dict(by_index)
        for attempt in range(2):  # the second pass: what failed on every try, file by file
            chunks = _chunks(list(left.values()), n, chunk if attempt == 0 else 1)
            actors = max(1, min(n, len(chunks)))
            if log and attempt == 0:
                what = "GPU" if "num_gpus" in remote else f"CPU ({threads} thread{'s' * (threads > 1)})"
                log(f"Ray: {len(left)} file(s) in {len(chunks)} task(s) on {actors} {what} worker(s), {where}")
            ds = ray.data.from_items([{"tasks": json.dumps([asdict(t) for t in c])} for c in chunks],
                                     override_num_blocks=len(chunks))
            ds = _map(ds, actors, {"settings": asdict(settings), "threads": threads}, remote)
            try:
                for row in ds.iter_rows():
                    index = int(row["index"])
                    if index in left:
                        yield _outcome(jobs[index], left.pop(index), row)
            except Exception as exc:
                raise RayError(f"the Ray run failed: {_cause(exc)}") from None
            for index, t in list(left.items()):  # written, but the attempt's report was lost with its worker
                if _identity(t.dest) not in (None, t.prior):
                    yield _outcome(jobs[index], left.pop(index), _row(t, "recovered"))
            if not left or max(len(c) for c in chunks) == 1:
                break
        for index, t in left.items():
            yield _outcome(jobs[index], t, _row(
                t, "failed", error=f"its worker died on each of {1 + TASK_RETRIES} attempts (out of memory?)"))


def _map(ds, actors: int, kwargs: dict, remote: dict):
    """``map_batches`` with the stylizer actors. Ray Data restarts a dead actor and retries its tasks forever by
    default; a file that kills its worker each time would never let the run end, so tasks get TASK_RETRIES
    retries (an actor option Ray 2.60 still takes, deprecated, as a keyword; without it, the default)."""
    common = dict(batch_size=1, concurrency=actors, fn_constructor_kwargs=kwargs, **remote)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return ds.map_batches(_Worker, **common, max_task_retries=TASK_RETRIES)
    except TypeError:
        return ds.map_batches(_Worker, **common)


def _outcome(job: Job, t: Task, row: dict) -> RayOutcome:
    error = None
    if row["status"] == "failed":
        kind = OutputExistsError if row.get("error_type") == "exists" else MetastyleError
        error = kind(job.label, str(row["error"]))
        error.exit_code = int(row.get("exit_code") or 1)
    size = (int(row["width"]), int(row["height"]))
    return RayOutcome(job, Path(t.shown or str(row["output"])), size, int(row["ms"]), error,
                      status=str(row["status"]), kind=t.kind, worker=str(row.get("worker") or ""),
                      frames=int(row.get("frames") or 0), model=str(row.get("model") or ""),
                      device=str(row.get("device") or ""))


def _cause(exc: BaseException) -> str:
    """The readable reason of a Ray error: the workers' own one-line error where Ray's text carries it (an actor
    that failed to start sends its traceback as text), else the last ``SomeError: message`` line."""
    chain, seen = [], set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        inner = getattr(e, "cause", None)
        e = inner if isinstance(inner, BaseException) else (e.__cause__ or e.__context__)
    for e in chain:
        if isinstance(e, MetastyleError):
            return str(e)
    line = re.compile(r"^\s*([A-Za-z_][\w.]*): (.+)$")
    for e in chain:
        found = [m for text in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines() if (m := line.match(text))]
        ours = [m for m in found if m.group(1).startswith("metastyle_batch.")]
        if ours:
            return ours[-1].group(2).strip()
        if found:
            return f"{found[-1].group(1).rsplit('.', 1)[-1]}: {found[-1].group(2).strip()}"[:500]
    return f"{type(exc).__name__}: {one_line(exc)[:500]}"
