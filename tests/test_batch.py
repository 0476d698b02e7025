"""The library's batch planner and overlapped run, the error taxonomy, and a CLI that starts without torch."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from metastyle_batch import batch
from metastyle_batch.errors import MetastyleError, OutputExistsError
from metastyle_batch.images import ImageError, read_image

from conftest import save_rgb


def test_cli_import_does_not_import_torch() -> None:
    code = ("import sys, metastyle_batch.cli, metastyle_batch.commands.common; "
            "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_error_taxonomy_is_one_line_with_exit_codes() -> None:
    from metastyle_batch.model.io import ModelError
    from metastyle_batch.model.vgg_weights import VGGWeightsError
    from metastyle_batch.video import KeyframeError, VideoError, VideoInputError
    from metastyle_batch.watch import WatchError

    for cls, code in [(ImageError, 2), (ModelError, 2), (VGGWeightsError, 2), (VideoError, 1), (VideoInputError, 2),
                      (KeyframeError, 2), (WatchError, 2), (OutputExistsError, 2)]:
        exc = cls("a\nfile", "what\n  went wrong")
        assert isinstance(exc, MetastyleError) and exc.exit_code == code
        assert str(exc) == "a\\nfile: what went wrong"
    assert str(ModelError("no file involved")) == "no file involved"


def _folder(tmp_path: Path, n: int = 5) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(n):
        save_rgb(src / f"p{i}.png", 24 + 4 * i, 32, seed=i)
    (src / "broken.png").write_bytes(b"not a png")
    (src / "notes.txt").write_text("not an image")
    return src


def _stylize(picture):
    """A pure per-pixel function standing in for the network: the run's plumbing is under test here."""
    picture.frames = [np.ascontiguousarray(1.0 - f[:, ::-1]) for f in picture.frames]
    return picture


def test_overlapped_run_writes_what_the_sequential_run_writes(tmp_path: Path) -> None:
    src = _folder(tmp_path)
    found = batch.expand_inputs([str(src)])
    assert [j.path.name for j in found.jobs] == ["broken.png", "p0.png", "p1.png", "p2.png", "p3.png", "p4.png"]
    results = {}
    for overlap in (False, True):
        plan = batch.plan_outputs(str(tmp_path / f"out{overlap}") + "/", found.jobs, found.batch)
        results[overlap] = list(batch.run(found.jobs, plan, _stylize, overlap=overlap))
    for seq, ovl in zip(results[False], results[True]):
        assert seq.job == ovl.job and (seq.error is None) == (ovl.error is None)
        if seq.error is None:
            assert seq.output.read_bytes() == ovl.output.read_bytes() and seq.size == ovl.size
    failed = [o for o in results[True] if o.error is not None]
    assert len(failed) == 1 and str(failed[0].error).startswith(f"{src / 'broken.png'}: ")
    out = read_image(tmp_path / "outTrue" / "p3.png").frames[0]
    assert np.allclose(out, 1.0 - read_image(src / "p3.png").frames[0][:, ::-1], atol=1 / 255)
    assert sorted(p.name for p in (tmp_path / "outTrue").iterdir()) == [f"p{i}.png" for i in range(5)]


def test_run_never_overwrites_and_reports_each_collision(tmp_path: Path) -> None:
    src = _folder(tmp_path, 3)
    found = batch.expand_inputs([str(src / "p0.png"), str(src / "p1.png"), str(src)])
    assert len(found.jobs) == 4  # each file once, however often it is named
    out = tmp_path / "out"
    out.mkdir()
    (out / "p1.png").write_bytes(b"keep me")
    plan = batch.plan_outputs(str(out), found.jobs, found.batch)
    outcomes = {o.job.path.name: o for o in batch.run(found.jobs, plan, _stylize)}
    assert isinstance(outcomes["p1.png"].error, OutputExistsError)
    assert (out / "p1.png").read_bytes() == b"keep me" and outcomes["p0.png"].error is None
    beside = batch.plan_outputs(None, found.jobs, found.batch)
    assert batch.output_path(found.jobs[0], beside, "png") == src / "p0_stylized.png"
    with pytest.raises(batch.PlanError):
        batch.plan_outputs(str(tmp_path / "one.png"), found.jobs, found.batch)
    with pytest.raises(batch.PlanError):
        batch.expand_inputs(["-", str(src)])


def test_overlap_runs_decode_compute_and_encode_at_once(tmp_path: Path) -> None:
    """While one picture computes, the next is being decoded: the reader thread is ahead of the compute."""
    src = _folder(tmp_path, 4)
    found = batch.expand_inputs([str(p) for p in sorted(src.glob("p*.png"))])
    ahead = []
    started = threading.Event()

    def slow(picture):
        started.set()
        ahead.append(threading.active_count())
        return _stylize(picture)

    plan = batch.plan_outputs(str(tmp_path / "o") + "/", found.jobs, True)
    outcomes = list(batch.run(found.jobs, plan, slow))
    assert all(o.error is None for o in outcomes) and started.is_set()
    assert max(ahead) >= threading.active_count() + 2  # reader and writer threads were alive during compute


def test_cpu_runs_never_import_torch_and_a_cached_style_gives_the_same_pixels(tmp_path: Path, monkeypatch,
                                                                              style_image: Path, vgg16_path: Path) -> None:
    """The CPU engine needs no torch, even for a new style; the first run leaves the generated network in the cache
    and the next runs that same graph. ``METASTYLE_ORT=0`` (the PyTorch CPU path) agrees within a level."""
    monkeypatch.setenv("METASTYLE_CACHE", str(tmp_path / "cache"))
    photo = save_rgb(tmp_path / "photo.png", 45, 61)
    run = ("import sys; from metastyle_batch.cli import app; sys.argv = ['metastyle-batch'] + sys.argv[1:]\n"
           "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
           "print('torch' in sys.modules)")

    def cli(out: str, **env) -> str:
        args = [sys.executable, "-c", run, "image", str(photo), "-s", str(style_image), "-o", str(tmp_path / out)]
        return subprocess.run(args, capture_output=True, text=True, check=True, env={**os.environ, **env}).stdout

    assert cli("engine.png", METASTYLE_ORT="0").strip() == "True"  # the torch path, nothing cached
    assert not (tmp_path / "cache" / "nets").exists()
    assert cli("first.png").strip() == "False"
    assert len(list((tmp_path / "cache" / "nets").glob("*.onnx"))) == 1
    assert cli("cached.png").strip() == "False"
    engine, first, cached = (read_image(tmp_path / f"{n}.png").frames[0] for n in ("engine", "first", "cached"))
    assert np.array_equal(first, cached)  # both ONNX Runtime
    assert np.abs(engine - cached).max() <= 1 / 255 + 1e-6  # PyTorch's float order vs ONNX Runtime's
