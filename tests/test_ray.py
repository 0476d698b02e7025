"""`metastyle-batch image --ray` and metastyle_batch.distributed: the batch as a Ray Data pipeline.

One local Ray cluster (2 CPUs, so 2 stylizer worker processes of 1 thread each, a 200 MB object store) serves the
module; the first test starts its own through the real command line instead. Images are small (the machine is
shared with training), the two videos are 1 s at 10 fps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import save_rgb
from PIL import Image
from typer.testing import CliRunner

from metastyle_batch import batch, distributed
from metastyle_batch.cli import app
from metastyle_batch.paths import atomic_path, atomic_write_bytes

pytest.importorskip("ray.data", reason="needs the ray extra: pip install -e '.[ray]'")

runner = CliRunner()
EXE = Path(sys.executable).with_name("metastyle-batch")


def invoke(*args):
    return runner.invoke(app, [os.fspath(a) if isinstance(a, Path) else str(a) for a in args])


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA"))


def frames(path: Path) -> np.ndarray:
    from metastyle_batch.video import ffmpeg_exe, probe

    info = probe(path)
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-map", "0:V:0", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width, 3)


def make_clip(path: Path, size: str, audio: bool) -> Path:
    from metastyle_batch.video import ffmpeg_exe

    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=10:duration=1"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac"]
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *args, "-c:v", "libx264",
                    "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 images (PNG, JPEG, RGBA, odd sizes), 2 short videos and a corrupt file, in one folder."""
    d = tmp_path_factory.mktemp("ray_in")
    for i in range(20):
        h, w = 40 + 7 * (i % 5), 56 + 9 * (i % 4)
        if i % 4 == 1:
            save_rgb(d / f"img{i:02d}.jpg", h, w, seed=i, quality=92)
        elif i % 4 == 2:
            rgb = np.asarray(Image.open(save_rgb(d / f"img{i:02d}.png", h, w, seed=i)))
            alpha = np.linspace(0, 255, w, dtype=np.uint8)[None].repeat(h, 0)
            Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(d / f"img{i:02d}.png")
        else:
            save_rgb(d / f"img{i:02d}.png", h, w, seed=i)
    make_clip(d / "clip_a.mp4", "96x64", audio=True)
    make_clip(d / "clip_b.mov", "70x50", audio=False)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return d


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with 2 CPUs for this module: distributed.run uses it, then it is shut down."""
    with distributed.connect("local", num_cpus=2) as where:
        yield where


# ------------------------------------------------------------------------------------- without a cluster


def test_command_line_starts_a_quiet_local_cluster(tmp_path: Path, style_image: Path, vgg16_path: Path):
    """The README example: bare --ray starts (and stops) a local cluster; stdout is only the JSON, stderr only
    our own lines, whatever Ray logs."""
    src = save_rgb(tmp_path / "photo.png", 60, 80)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    res = subprocess.run([str(EXE), "image", str(src), "-s", str(style_image), "-o", str(tmp_path / "out") + "/",
                          "--ray", "--ray-workers", "1", "--json"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert [Path(o["output"]).name for o in summary["outputs"]] == ["photo.png"]
    assert summary["device"] == "cpu" and len(summary["workers"]) == 1
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("Ray: 1 file(s) in 1 task(s) on 1 CPU"), res.stderr
    assert lines[-1].startswith("Wrote "), res.stderr
    assert len(lines) == 2, res.stderr  # no Ray start-up, deprecation or C++ log lines
    assert Image.open(tmp_path / "out" / "photo.png").size == (80, 60)


def test_without_ray_it_says_how_to_install(monkeypatch, tmp_path: Path, style_image: Path):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    src = save_rgb(tmp_path / "a.png", 20, 20)
    res = invoke("image", src, "-s", style_image, "-o", tmp_path / "out/", "--ray")
    assert res.exit_code == 2
    assert 'pip install "metastyle-batch[ray]"' in res.stderr
    with pytest.raises(distributed.RayError, match="metastyle-batch\\[ray\\]"):
        with distributed.connect():
            pass


@pytest.mark.parametrize("extra, message", [
    (["--refine", "3"], "--refine runs on one machine"),
    (["-o", "-"], "not stdout"),
    (["--ray-address", "auto", "-o", "x/", "--strength", "0.5", "--net", "n.safetensors"], "either --style"),
])
def test_usage_errors(tmp_path: Path, style_image: Path, extra, message):
    src = save_rgb(tmp_path / "a.png", 20, 20)
    res = invoke("image", src, "-s", style_image, "--ray", *extra)
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    res = invoke("image", "-", "-s", style_image, "--ray", "-o", tmp_path / "o/")
    assert res.exit_code == 2 and "not stdin" in res.stderr


def test_exclusive_path_never_replaces(tmp_path: Path):
    dest = tmp_path / "sub" / "out.png"
    atomic_write_bytes(dest, b"first", exclusive=True)
    with pytest.raises(FileExistsError):
        atomic_write_bytes(dest, b"second", exclusive=True)
    assert dest.read_bytes() == b"first"
    with atomic_path(dest, suffix=".part.png") as tmp:
        assert tmp.name.startswith(".out.png.") and tmp.name.endswith(".part.png")
        tmp.write_bytes(b"third")
    assert dest.read_bytes() == b"third"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.png"]  # no temp file left


def test_planning_uses_the_local_naming_and_guard(tmp_path: Path):
    """Names as the local path gives them (a PNG named .jpg becomes .png), videos keep their container, existing
    outputs are skipped (or carry their identity, to be replaced), collisions and inputs are refused."""
    d = tmp_path / "in"
    save_rgb(d / "a.jpg", 20, 20)
    save_rgb(d / "b.jpg", 20, 20)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "c.jpg", format="PNG")  # misnamed
    make_clip(d / "v.mov", "32x32", audio=False)
    (d / "notes.txt").write_text("not an input")
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.jpg").write_bytes(b"done before")
    found = distributed.expand([str(d)])
    assert [Path(j.label).name for j in found.jobs] == ["a.jpg", "b.jpg", "c.jpg", "v.mov"]
    plan = distributed.video_plan(str(out) + "/", found.jobs, found.batch)
    tasks, settled = distributed.plan_tasks(found.jobs, plan, overwrite=False)
    assert {Path(t.label).name: Path(t.dest).name for t in tasks} == {"a.jpg": "a.jpg", "c.jpg": "c.png",
                                                                      "v.mov": "v.mov"}
    assert [(Path(o.job.label).name, o.status) for o in settled] == [("b.jpg", "skipped")]
    tasks, settled = distributed.plan_tasks(found.jobs, plan, overwrite=True)
    assert not settled and [t.prior is not None for t in tasks] == [False, True, False, False]
    forced = batch.plan_outputs(str(out) + "/", found.jobs, True, "png")
    save_rgb(d / "a.png", 20, 20)
    jobs = distributed.expand([str(d)]).jobs
    tasks, settled = distributed.plan_tasks(jobs, forced, overwrite=False)
    assert [o.status for o in settled] == ["failed"] and "also the output of" in str(settled[0].error)
    beside = distributed.video_plan(str(d / "a.jpg"), [jobs[0]], False)
    _, settled = distributed.plan_tasks([jobs[0]], beside, overwrite=True)
    assert "would overwrite an input" in str(settled[0].error)
    one = distributed.video_plan(str(tmp_path / "film.mp4"), [batch.Job("v", d / "v.mov")], False)
    assert one.mode == "file" and distributed.video_output_path(batch.Job("v", d / "v.mov"), one).name == "film.mp4"


# ------------------------------------------------------------------------------------- on the cluster


def test_cluster_run_equals_local_run_and_resumes(cluster, inputs: Path, tmp_path: Path, style_image: Path,
                                                  vgg16_path: Path, monkeypatch):
    """20 images and 2 videos on 2 workers: the same pixels as the local commands, the corrupt file reported;
    the re-run skips everything and writes nothing."""
    monkeypatch.setenv("METASTYLE_CACHE", str(tmp_path / "cache"))  # both runs: the same style code, no cached net
    out = tmp_path / "ray"
    res = invoke("image", inputs, "-s", style_image, "-o", f"{out}/", "--ray", "--json")
    assert res.exit_code == 1, res.stderr
    summary = json.loads(res.stdout)
    assert [f["input"] for f in summary["failed"]] == [str(inputs / "broken.jpg")]
    assert "broken.jpg:" in summary["failed"][0]["error"]
    names = sorted(Path(o["output"]).name for o in summary["outputs"])
    assert names == sorted([f"img{i:02d}{'.jpg' if i % 4 == 1 else '.png'}" for i in range(20)]
                           + ["clip_a.mp4", "clip_b.mov"])
    assert len(summary["workers"]) == 2 and summary["device"] == "cpu"
    assert "22 done, 1 failed:" in res.stderr

    # the local path (no cached generated network yet: the engine, as on a first run) and `metastyle-batch video`
    ref = tmp_path / "local"
    res_local = invoke("image", inputs, "-s", style_image, "-o", f"{ref}/")
    assert res_local.exit_code == 1, res_local.stderr
    for o in summary["outputs"]:
        name = Path(o["output"]).name
        if name.startswith("img"):
            a, b = pixels(out / name), pixels(ref / name)
            assert a.shape == b.shape and (o["width"], o["height"]) == (a.shape[1], a.shape[0])
            assert np.array_equal(a, b), name
    for clip, name in (("clip_a.mp4", "clip_a.mp4"), ("clip_b.mov", "clip_b.mov")):
        res_video = invoke("video", inputs / clip, "-o", ref / name, "-s", style_image)
        assert res_video.exit_code == 0, res_video.stderr
        a, b = frames(out / name), frames(ref / name)
        assert a.shape == b.shape and a.shape[0] == 10
        assert np.array_equal(a, b), name

    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = invoke("image", inputs, "-s", style_image, "-o", f"{out}/", "--ray", "--json")
    assert again.exit_code == 1, again.stderr
    summary = json.loads(again.stdout)
    assert summary["outputs"] == [] and len(summary["skipped"]) == 22 and len(summary["failed"]) == 1
    assert "0 done, 22 skipped (already there; --overwrite replaces them), 1 failed:" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    kept = pixels(out / "img00.png")
    redo = invoke("image", inputs / "img00.png", inputs / "clip_b.mov", "-s", style_image, "-o", f"{out}/", "--ray",
                  "--overwrite")
    assert redo.exit_code == 0 and "2 done, 0 failed." in redo.stderr, redo.stderr
    now = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert sorted(n for n in now if now[n] != before[n]) == ["clip_b.mov", "img00.png"]
    assert set(now) == set(before) and np.array_equal(pixels(out / "img00.png"), kept)


def test_a_killed_worker_is_restarted_and_every_output_written_once(cluster, tmp_path: Path, style_image: Path,
                                                                      vgg16_path: Path):
    src = tmp_path / "in"
    for i in range(20):
        save_rgb(src / f"p{i:02d}.png", 96, 128, seed=100 + i)
    found = distributed.expand([str(src)])
    out = tmp_path / "out"
    plan = batch.plan_outputs(str(out) + "/", found.jobs, True)
    outcomes, killed = [], None
    for o in distributed.run(found.jobs, plan, distributed.Settings(styles=[str(style_image)]), workers=2):
        outcomes.append(o)
        if killed is None:
            killed = int(o.worker.rsplit(":", 1)[1])
            os.kill(killed, signal.SIGKILL)  # it is busy with (or queued for) its next images
    labels = [o.job.label for o in outcomes]
    assert sorted(labels) == sorted(j.label for j in found.jobs) and len(set(labels)) == 20  # each exactly once
    assert all(o.error is None and o.status in ("written", "recovered") for o in outcomes), \
        [str(o.error) for o in outcomes if o.error]
    workers = {o.worker for o in outcomes if o.worker}
    assert len(workers) >= 3, workers  # the killed worker's images went to its restarted process
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        f"p{i:02d}.png" for i in range(20))
    for i in range(20):
        with Image.open(out / f"p{i:02d}.png") as im:
            im.load()  # whole, not truncated
            assert im.size == (128, 96)
