"""`metastyle-batch video` and metastyle_batch.video: probing, keyframe schedules, the pipelined run, the CLI.

Clips are generated with the bundled ffmpeg (testsrc2 + a sine tone at 30000/1001 fps, 2 s, 322x182) once per
module; variants: rotated (display matrix), variable frame rate, no audio, odd size, truncated, not a video.
Pipeline-only properties (orientation, timing, audio) use an identity "stylizer" so they cost no compute;
style properties use the small random test model from conftest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from metastyle_batch.commands.video import register
from metastyle_batch.model.meta import StyleCode
from metastyle_batch.video import (Keyframe, KeyframeError, StyleSchedule, VideoError, VideoInputError, ffmpeg_exe,
                                   Stabilizer, parse_keyframes, probe, resolve_keyframes, stylize_video)

FPS = Fraction(30000, 1001)
W, H = 322, 182


# ------------------------------------------------------------------------------------------ fixtures


def ffmpeg(*args: str) -> None:
    res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *args], capture_output=True)
    assert res.returncode == 0, res.stderr.decode(errors="replace")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    src = f"testsrc2=size={W}x{H}:rate=30000/1001:duration=2"
    x264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    c = {name: d / f"{name}.mp4" for name in ("clip", "rotated", "vfr", "noaudio", "odd", "truncated", "truncated_moov")}
    ffmpeg("-f", "lavfi", "-i", src, "-f", "lavfi", "-i", "sine=frequency=440:duration=2", *x264, "-c:a", "aac",
           str(c["clip"]))
    ffmpeg("-display_rotation", "90", "-i", str(c["clip"]), "-c", "copy", str(c["rotated"]))
    # 30 frames at 30 fps, then 30 frames at 15 fps: 60 frames in 3 s, average 20 fps
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate=30:duration=3", "-f", "lavfi", "-i", "sine=duration=3",
           "-vf", "setpts='if(lt(N,30),N/30,1+(N-30)/15)/TB'", "-frames:v", "60", "-fps_mode", "vfr", *x264,
           "-c:a", "aac", str(c["vfr"]))
    ffmpeg("-f", "lavfi", "-i", src, *x264, str(c["noaudio"]))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=162x92:rate=25:duration=1", "-vf", "format=yuv444p,crop=161:91:0:0",
           "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv444p", str(c["odd"]))  # 4:4:4 allows odd sizes
    faststart = d / "faststart.mp4"
    ffmpeg("-i", str(c["clip"]), "-c", "copy", "-movflags", "+faststart", str(faststart))
    data = faststart.read_bytes()
    c["truncated"].write_bytes(data[: len(data) * 2 // 5])  # index intact, media data cut
    plain = c["clip"].read_bytes()
    c["truncated_moov"].write_bytes(plain[: len(plain) // 2])  # the index (at the end) is gone
    mkv = d / "clip.mkv"
    ffmpeg("-i", str(c["clip"]), "-c", "copy", str(mkv))
    c["truncated_mkv"] = d / "truncated.mkv"
    c["truncated_mkv"].write_bytes(mkv.read_bytes()[: mkv.stat().st_size // 2])  # no error, it just ends
    c["text"] = d / "notes.mp4"
    c["text"].write_text("this is not a video\n")
    from conftest import save_rgb

    c["image"] = save_rgb(d / "still.png", 48, 64)
    return c


def decode(path: Path) -> np.ndarray:
    """All frames as (N, H, W, 3) uint8, exactly as the pipeline reads them (auto-rotated, one per frame)."""
    info = probe(path)
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-map", "0:V:0",
                          "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width, 3)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


class Identity:
    """Duck-typed engine whose generated network returns its input: isolates the video plumbing."""

    device = torch.device("cpu")
    runtime, threads = "onnxruntime", 1
    max_pixels = 1 << 24

    def __init__(self, fail_at: int | None = None):
        self.fail_at, self.seen = fail_at, 0

    def encode(self, style) -> StyleCode:
        return style if isinstance(style, StyleCode) else StyleCode(np.zeros(8))

    def encode_array(self, rgb) -> StyleCode:
        return StyleCode(np.zeros(8))

    def network(self, code):
        return {}

    def run_array(self, x: np.ndarray, params, threads=None) -> np.ndarray:
        self.seen += x.shape[0]
        if self.fail_at is not None and self.seen >= self.fail_at:
            raise RuntimeError("simulated device failure")
        return np.clip(x, 0, 1)


@pytest.fixture(scope="module")
def stylizer(model_path: Path, vgg16_path: Path):
    from metastyle_batch.engine import Stylizer

    return Stylizer(model=model_path, device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    """The machine is shared with training: one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


runner = CliRunner()


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)  # keep `video` a subcommand
    register(app)
    return app


def invoke(*args):
    return runner.invoke(cli_app(), ["video", *[os.fspath(a) if isinstance(a, Path) else str(a) for a in args]])


def usage_error(result, *words: str) -> str:
    assert result.exit_code == 2, f"exit {result.exit_code}\nstderr: {result.stderr}\n{result.exception!r}"
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------ probe


def test_probe_exact_rate_count_size_audio(clips) -> None:
    info = probe(clips["clip"])
    assert info.fps == FPS and isinstance(info.fps, Fraction)  # never 29.97 or 29
    assert (info.frames, info.width, info.height) == (60, W, H)
    assert info.has_audio and info.audio_codec == "aac" and not info.vfr and info.rotation == 0
    assert info.duration == pytest.approx(2.002, abs=1e-6)


def test_probe_rotated_vfr_noaudio(clips) -> None:
    rot = probe(clips["rotated"])
    assert rot.rotation in (90, 270) and (rot.width, rot.height) == (H, W)  # the size frames are decoded at
    vfr = probe(clips["vfr"])
    assert vfr.vfr and vfr.fps == 20 and vfr.frames == 60 and vfr.nominal_fps == 30
    assert not probe(clips["noaudio"]).has_audio


@pytest.mark.parametrize("name, words", [
    ("truncated", ["truncated"]), ("truncated_moov", ["truncated", "moov"]), ("truncated_mkv", ["truncated"]),
    ("text", ["not a video"]),
    ("image", ["still image"]),
])
def test_probe_rejects(clips, name: str, words: list[str]) -> None:
    with pytest.raises(VideoInputError) as exc:
        probe(clips[name])
    assert str(exc.value).startswith(str(clips[name]) + ": ")
    for w in words:
        assert w in str(exc.value)


def test_probe_missing_and_folder(tmp_path: Path) -> None:
    with pytest.raises(VideoInputError, match="no such file"):
        probe(tmp_path / "nope.mp4")
    with pytest.raises(VideoInputError, match="directory"):
        probe(tmp_path)


# ------------------------------------------------------------------------------------------ keyframes


def test_keyframe_spec_positions() -> None:
    keys = parse_keyframes("0:a.jpg, 5s:b.jpg,80%:c.jpg,12f:C:/x/d.jpg")
    assert [(k.value, k.unit, k.style) for k in keys] == [
        (0, "f", "a.jpg"), (5, "s", "b.jpg"), (80, "%", "c.jpg"), (12, "f", "C:/x/d.jpg")]
    placed = resolve_keyframes(keys[:3], 300, FPS)
    assert [f for f, _ in placed] == [0, 150, 239]  # 5 s * 29.97 = 149.85 → 150; 80% of frames 0..299
    assert [f for f, _ in resolve_keyframes([Keyframe(2, "s", "x", "2s")], 60, FPS)] == [59]  # 2 s ≈ the end


@pytest.mark.parametrize("spec, words", [
    ("", ["empty"]), ("a.jpg", ["POSITION:STYLE"]), ("5x:a.jpg", ["bad keyframe position"]),
    ("1.5:a.jpg", ["whole"]), ("120%:a.jpg", ["at most 100%"]), ("5s:", ["no style"]), ("-1:a.jpg", ["bad"]),
])
def test_keyframe_spec_errors(spec: str, words: list[str]) -> None:
    with pytest.raises(KeyframeError) as exc:
        parse_keyframes(spec)
    for w in words:
        assert w in str(exc.value)


def test_keyframes_past_end_or_on_one_frame() -> None:
    with pytest.raises(KeyframeError, match="past the end"):
        resolve_keyframes(parse_keyframes("0:a,5s:b"), 60, FPS)
    with pytest.raises(KeyframeError, match="both land on frame 0"):
        resolve_keyframes(parse_keyframes("0:a,0%:b"), 60, FPS)


def test_schedule_interpolation_and_easing() -> None:
    a, b = StyleCode(torch.zeros(4)), StyleCode(torch.ones(4))
    lin = StyleSchedule([(10, a), (20, b)], "linear")
    smooth = StyleSchedule([(10, a), (20, b)], "smooth")
    h = lin.hidden([0, 10, 15, 20, 30])[:, 0].tolist()
    assert h == pytest.approx([0, 0, 0.5, 1, 1])
    s = smooth.hidden([10, 12, 15, 18, 20])[:, 0].tolist()
    assert s == pytest.approx([0, 0.104, 0.5, 0.896, 1])  # smoothstep: slow at both ends
    assert not lin.fixed and StyleSchedule([(0, a)]).fixed


def test_batched_per_frame_codes_equal_one_by_one(stylizer, style_image: Path, style_image2: Path, make_image) -> None:
    """Frames with different codes in one batch (grouped conv) give what each frame gets on its own."""
    sched = StyleSchedule([(0, stylizer.encode(style_image)), (3, stylizer.encode(style_image2))])
    x = torch.from_numpy(np.stack([make_image(36, 50, seed=i) for i in range(4)])).permute(0, 3, 1, 2).float() / 255
    hidden = sched.hidden(range(4))
    together = stylizer.run(x, stylizer.network(hidden))
    alone = torch.cat([stylizer.run(x[i:i + 1], stylizer.network(StyleCode(hidden[i]))) for i in range(4)])
    assert together.shape == (4, 3, 36, 50)
    assert torch.allclose(together, alone, atol=1e-4)
    assert (together[0] - together[3]).abs().mean() > 0.01  # the codes really differ


# ------------------------------------------------------------------------------------------ pipeline (identity)


def test_pipeline_keeps_frames_rate_size_audio(clips, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    calls = []
    stats = stylize_video(Identity(), clips["clip"], out, "style", batch=4, progress=lambda d, t: calls.append((d, t)))
    info = probe(out)
    assert (info.frames, info.fps, info.width, info.height) == (60, FPS, W, H)
    assert info.has_audio and not info.vfr and info.rotation == 0
    assert info.audio_end == pytest.approx(2.0, abs=0.03) and info.duration == pytest.approx(2.002, abs=1e-6)
    assert stats["frames"] == 60 and stats["fps"] == "30000/1001" and stats["seconds"] == pytest.approx(2.002)
    assert stats["flicker"] == pytest.approx(1.0)  # identity: output changes exactly as much as the source
    assert calls[-1] == (60, 60) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert mad(decode(out), decode(clips["clip"])) < 3.0  # frames in order, colours kept (H.264 noise only)
    assert leftovers(tmp_path) == []


def test_pipeline_rotated_clip_is_rotated_once(clips, tmp_path: Path) -> None:
    out = tmp_path / "rot.mp4"
    stylize_video(Identity(), clips["rotated"], out, "style")
    info = probe(out)
    assert (info.width, info.height, info.rotation) == (H, W, 0)  # upright pixels, no rotation flag left
    upright = decode(clips["rotated"])
    assert upright.shape[1:3] == (W, H)
    assert mad(decode(out), upright) < 3.0


def test_pipeline_vfr_written_at_average_rate(clips, tmp_path: Path) -> None:
    out = tmp_path / "vfr.mp4"
    stats = stylize_video(Identity(), clips["vfr"], out, "style")
    info = probe(out)
    assert info.fps == 20 and not info.vfr and info.frames == 60 and info.duration == pytest.approx(3.0)
    assert info.has_audio and info.audio_end == pytest.approx(probe(clips["vfr"]).audio_end, abs=0.05)
    assert any("variable frame rate" in w for w in stats["warnings"])


def test_pipeline_no_audio_and_odd_size(clips, tmp_path: Path) -> None:
    out = tmp_path / "na.mp4"
    stylize_video(Identity(), clips["noaudio"], out, "style")
    assert not probe(out).has_audio and probe(out).frames == 60
    odd = tmp_path / "odd.mp4"
    stats = stylize_video(Identity(), clips["odd"], odd, "style")
    info = probe(odd)
    assert (info.width, info.height, info.frames, info.fps) == (162, 92, 25, 25)  # padded by one pixel
    assert any("odd frame size 161x91" in w for w in stats["warnings"])
    got, src = decode(odd), decode(clips["odd"])
    assert mad(got[:, :91, :161], src) < 8.0  # 4:4:4 source → 4:2:0 output: chroma edges soften
    assert mad(got[:, :91, :161], src) < mad(got[:, 1:92, 1:162], src)  # not shifted: padding is bottom/right
    assert np.array_equal(got[:, 91], got[:, 90]) or mad(got[:, 91], got[:, 90]) < 4.0  # edge-replicated row


def test_pipeline_failure_leaves_nothing(clips, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="simulated"):
        stylize_video(Identity(fail_at=30), clips["clip"], out, "style", batch=2)
    assert not out.exists() and leftovers(tmp_path) == []
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        stylize_video(Identity(fail_at=30), clips["clip"], out, "style", overwrite=True)
    assert out.read_bytes() == b"old" and leftovers(tmp_path) == []  # the old file survives a failed run
    with pytest.raises(VideoError, match="exists"):
        stylize_video(Identity(), clips["clip"], out, "style")
    with pytest.raises(VideoError, match="is the input file"):
        stylize_video(Identity(), clips["clip"], clips["clip"], "style", overwrite=True)


# ------------------------------------------------------------------------------------------ with the model


def test_flicker_is_measured(stylizer, clips, tmp_path: Path, style_image: Path) -> None:
    """Flicker = mean |consecutive stylized frames| / mean |consecutive source frames|; identity gives 1.0."""
    stats = stylize_video(stylizer, clips["clip"], tmp_path / "a.mp4", style_image, max_side=160)
    assert stats["width"] == 160 and stats["height"] == 90
    assert stats["flicker"] > 0 and stats["stylized_mad"] > 0 and stats["source_mad"] > 0
    assert stats["flicker"] == pytest.approx(stats["stylized_mad"] / stats["source_mad"], rel=1e-3)
    print(f"flicker ratio on the test clip (random test model, 160x90): {stats['flicker']:.3f}")
    quiet = stylize_video(stylizer, clips["clip"], tmp_path / "b.mp4", style_image, max_side=64, measure_flicker=False)
    assert quiet["flicker"] is None


def test_stabilizer_holds_only_still_pixels() -> None:
    """A square moves over a still background while the "stylization" shimmers everywhere: pixels within
    ``radius`` of any source change get exactly the network's output (no trails), still pixels far from motion
    are pulled towards the previous output, and the first frame passes unchanged."""
    g = torch.Generator().manual_seed(0)
    n, size, r = 6, 64, 4
    x = torch.full((n, 3, size, size), 0.5)
    for t in range(n):
        x[t, :, 10:20, 5 + 6 * t:15 + 6 * t] = 1.0
    y = 0.5 + 0.1 * torch.rand(n, 3, size, size, generator=g)
    stab = Stabilizer(alpha=0.7, radius=r)
    xn, yn = x.numpy(), y.numpy()
    z = torch.from_numpy(np.concatenate([stab(xn[:4], yn[:4]), stab(xn[4:], yn[4:])]))  # state carries across batches
    assert torch.equal(z[0], y[0])
    for t in range(1, n):
        changed = (x[t] - x[t - 1]).abs().mean(0) > 0
        rows, cols = torch.nonzero(changed, as_tuple=True)
        near = torch.zeros(size, size, dtype=torch.bool)
        top, left = max(0, int(rows.min()) - r), max(0, int(cols.min()) - r)
        near[top:int(rows.max()) + r + 1, left:int(cols.max()) + r + 1] = True
        assert torch.equal(z[t][:, near], y[t][:, near])
        far = y[t][:, 40:] + 0.7 * (z[t - 1][:, 40:] - y[t][:, 40:])
        assert torch.allclose(z[t][:, 40:], far, atol=1e-6)
    shimmer = lambda v: float((v[1:, :, 40:] - v[:-1, :, 40:]).abs().mean())  # noqa: E731
    assert shimmer(z) < 0.5 * shimmer(y)
    with pytest.raises(ValueError):
        Stabilizer(alpha=1.0)


def test_stabilize_lowers_measured_flicker(stylizer, clips, tmp_path: Path, style_image: Path) -> None:
    # palette 0: the stabilizer alone (the palette map is the same for both, but its stronger colours make x264's
    # rate control treat the first frame differently enough to blur the comparison below)
    plain = stylize_video(stylizer, clips["clip"], tmp_path / "a.mp4", style_image, max_side=160, palette=0)
    calm = stylize_video(stylizer, clips["clip"], tmp_path / "b.mp4", style_image, max_side=160, stabilize=True,
                         palette=0)
    assert calm["stabilize"] is True and calm["frames"] == plain["frames"] == 60
    assert calm["flicker"] < plain["flicker"]
    print(f"flicker on the test clip (random test model): {plain['flicker']:.3f} -> {calm['flicker']:.3f} stabilized")
    got, ref = decode(tmp_path / "b.mp4"), decode(tmp_path / "a.mp4")
    assert mad(got[0], ref[0]) < 2  # the first frame is the network's own output
    res = invoke(clips["noaudio"], "-o", tmp_path / "c.mp4", "-s", style_image, "--stabilize", "--json",
                 "--max-side", "96")
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["stabilize"] is True and summary["frames"] == 60 and probe(tmp_path / "c.mp4").width == 96


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x54:rate=24:duration=0.25", "-c:v", "libx264", "-preset",
           "veryfast", "-pix_fmt", "yuv420p", str(path))
    return path


def test_strength_resolved_from_first_frame(stylizer, tiny: Path, tmp_path: Path, style_image: Path,
                                            style_image2: Path) -> None:
    out = tmp_path / "half.mp4"
    stylize_video(stylizer, tiny, out, style_image, strength=0.3)
    src, got = decode(tiny), decode(out)
    f0 = src[0].astype(np.float32) / 255
    want = (stylizer.stylize(f0, style_image, strength=0.3) * 255).round()  # the engine's own strength control
    full = (stylizer.stylize(f0, style_image) * 255).round()
    assert mad(got[0], want) < 0.5 * mad(got[0], full)


def test_preserve_color_keeps_chroma(stylizer, tiny: Path, tmp_path: Path, style_image: Path) -> None:
    def chroma(rgb):
        x = rgb.astype(np.float32)
        y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
        return np.stack([x[..., 2] - y, x[..., 0] - y], -1)

    plain, kept = tmp_path / "plain.mp4", tmp_path / "kept.mp4"
    stylize_video(stylizer, tiny, plain, style_image)
    stylize_video(stylizer, tiny, kept, style_image, preserve_color=True)
    src = decode(tiny)
    assert mad(chroma(decode(kept)), chroma(src)) < 0.5 * mad(chroma(decode(plain)), chroma(src))


def test_cli_fixed_style_json(clips, tmp_path: Path, style_image: Path, style_image2: Path, stylizer) -> None:
    out = tmp_path / "styled.mp4"
    res = invoke(clips["clip"], "-o", out, "--style", style_image, "--json", "--batch", "3")
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["output"] == str(out) and summary["frames"] == 60 and summary["fps"] == "30000/1001"
    assert summary["seconds"] == pytest.approx(2.002) and summary["frames_per_second"] > 0
    assert summary["flicker"] > 0 and summary["audio"] is True
    print(f"flicker ratio on the 322x182 test clip (random test model): {summary['flicker']:.3f}")
    info = probe(out)
    assert (info.frames, info.fps, info.width, info.height, info.has_audio) == (60, FPS, W, H, True)
    src, got = decode(clips["clip"]), decode(out)
    a, b = stylizer.encode(style_image), stylizer.encode(style_image2)
    for i in (0, 59):  # one network for the whole video: every frame is that network's output
        want = (stylizer.stylize(src[i].astype(np.float32) / 255, a) * 255).round()
        other = (stylizer.stylize(src[i].astype(np.float32) / 255, b) * 255).round()
        # the random test model makes saturated pixel noise, which H.264 4:2:0 cannot keep exactly
        assert mad(got[i], want) < 0.5 * mad(got[i], other) and mad(got[i], want) < 15
    assert leftovers(tmp_path) == []


def test_sample_frames_spread_over_the_clip_as_displayed(clips) -> None:
    from metastyle_batch.video.sample import sample_frames

    for name in ("clip", "rotated"):
        every = decode(clips[name])
        frames = sample_frames(probe(clips[name]), n=6)
        assert len(frames) == 6 and all(f.shape == every.shape[1:] for f in frames)  # rotated: 182x322
        where = [int(np.argmin([mad(f, g) for g in every])) for f in frames]
        assert all(min(mad(f, g) for g in every) < 1 for f in frames)  # real decoded frames, not blends
        assert where == sorted(where) and where[0] < 10 and where[-1] > 50  # in order, from start to end
    small = sample_frames(probe(clips["clip"]), n=2, max_side=100)
    assert len(small) == 2 and small[0].shape == (57, 100, 3)


def test_cli_refine_trains_on_the_clip_then_uses_it_for_every_frame(clips, tmp_path: Path, style_image: Path,
                                                                     style_image2: Path, stylizer) -> None:
    out = tmp_path / "refined.mp4"
    res = invoke(clips["clip"], "-o", out, "--style", style_image, "--refine", "2", "--json")
    assert res.exit_code == 0, res.stderr
    assert "refined 2 steps in" in res.stderr
    summary = json.loads(res.stdout)
    assert summary["frames"] == 60 and summary["audio"] is True
    src, got = decode(clips["clip"]), decode(out)
    plain = (stylizer.stylize(src[0].astype(np.float32) / 255, stylizer.encode(style_image)) * 255).round()
    assert got.shape == (60, H, W, 3) and mad(got[0], plain) > 1  # a different (fine-tuned) network
    usage_error(invoke(clips["clip"], "-o", tmp_path / "a.mp4", "--style", style_image, "--to", style_image2,
                       "--refine", "2"), "--refine needs one --style")
    usage_error(invoke(clips["clip"], "-o", tmp_path / "b.mp4", "--style", style_image, "--strength", "0.5",
                       "--refine", "2"), "--refine needs one --style")
    assert not (tmp_path / "a.mp4").exists() and leftovers(tmp_path) == []


def test_cli_to_moves_from_a_to_b(clips, tmp_path: Path, style_image: Path, style_image2: Path, stylizer) -> None:
    out = tmp_path / "to.mp4"
    res = invoke(clips["noaudio"], "-o", out, "-s", style_image, "--to", style_image2, "--ease", "smooth")
    assert res.exit_code == 0, res.stderr
    assert "Wrote" in res.stderr and not probe(out).has_audio
    src, got = decode(clips["noaudio"]), decode(out)
    assert len(got) == 60
    a, b = stylizer.encode(style_image), stylizer.encode(style_image2)

    def styled(i, code):
        return (stylizer.stylize(src[i].astype(np.float32) / 255, code) * 255).round()

    first, last = got[0], got[-1]
    assert mad(first, styled(0, a)) < mad(first, styled(0, b))
    assert mad(last, styled(59, b)) < mad(last, styled(59, a))
    assert mad(first, styled(0, a)) < 15 and mad(last, styled(59, b)) < 15  # exactly A / exactly B at the ends


def test_cli_keyframes(clips, tmp_path: Path, style_image: Path, style_image2: Path, stylizer) -> None:
    out = tmp_path / "kf.mkv"
    spec = f"0:{style_image},50%:{style_image2},100%:{style_image}"
    res = invoke(clips["clip"], "-o", out, "--keyframes", spec, "--max-side", "96")
    assert res.exit_code == 0, res.stderr
    info = probe(out)
    assert info.frames == 60 and info.fps == FPS and info.has_audio and (info.width, info.height) == (96, 54)
    got = decode(out)
    # the middle keyframe (frame round(0.5 * 59) = 30) is B, the ends are A: B's look dominates the middle
    # frame, so it is farther from both ends than they are from each other
    assert mad(got[30], got[0]) > mad(got[59], got[0])


def test_cli_subprocess_like_a_user(clips, tmp_path: Path, style_image: Path, vgg16_path: Path) -> None:
    out = tmp_path / "user.mp4"
    code = ("import typer; from metastyle_batch.commands.video import register; "
            "app = typer.Typer(); app.callback()(lambda: None); register(app); app()")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code, "video", str(clips["vfr"]), "-o", str(out), "-s",
                          str(style_image), "--json", "--max-side", "120", "--quality", "40"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["fps"] == "20" and summary["frames"] == 60 and summary["vfr"] is True
    assert "Warning: variable frame rate" in res.stderr
    assert probe(out).fps == 20 and probe(out).has_audio


def test_cli_ctrl_c_leaves_nothing(tmp_path: Path, style_image: Path, vgg16_path: Path) -> None:
    clip = tmp_path / "long.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=256x144:rate=25:duration=20", "-c:v", "libx264", "-preset",
           "ultrafast", "-pix_fmt", "yuv420p", str(clip))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "styled.mp4"
    code = ("import typer; from metastyle_batch.commands.video import register; "
            "app = typer.Typer(); app.callback()(lambda: None); register(app); app()")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, "video", str(clip), "-o", str(out), "-s", str(style_image),
                             "--batch", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not leftovers(out_dir) and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # let a few frames through the pipeline
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be interrupted")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Interrupted" in stderr and "Traceback" not in stderr
    assert list(out_dir.iterdir()) == []


def test_cli_processing_failure_exit_1(clips, tmp_path: Path, style_image: Path, vgg16_path: Path,
                                       monkeypatch) -> None:
    from metastyle_batch.engine_ort import OrtStylizer

    calls = {"n": 0}
    real = OrtStylizer.run

    def flaky(self, x, params, threads=None):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("out of memory (simulated)")
        return real(self, x, params, threads)

    monkeypatch.setattr(OrtStylizer, "run", flaky)
    out = tmp_path / "x.mp4"
    res = invoke(clips["clip"], "-o", out, "-s", style_image, "--max-side", "64")
    assert res.exit_code == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "out of memory (simulated)" in lines[0] and str(clips["clip"]) in lines[0]
    assert not out.exists() and leftovers(tmp_path) == []


def test_cli_usage_errors(clips, tmp_path: Path, style_image: Path, style_image2: Path) -> None:
    clip = clips["clip"]
    out = tmp_path / "o.mp4"
    usage_error(invoke(clip, "-o", out), "give a style")
    usage_error(invoke(clip, "-o", out, "-s", tmp_path / "missing.png"), "style image not found")
    usage_error(invoke(clip, "-o", out, "--to", style_image2), "--to needs --style")
    usage_error(invoke(clip, "-o", out, "-s", style_image, "--to", style_image2, "-k", f"0:{style_image}"),
                "not both")
    usage_error(invoke(clip, "-o", out, "-k", "0:a.png;5s:b.png"), "--keyframes")
    usage_error(invoke(clip, "-o", out, "-k", f"0:{style_image},9s:{style_image2}"), "past the end")
    usage_error(invoke(clip, "-o", out, "-s", style_image, "-k", f"0:{style_image2}"), "frame 0")
    usage_error(invoke(clip, "-o", out, "-s", style_image, "--ease", "bounce"), "--ease")
    usage_error(invoke(clip, "-o", tmp_path / "o.webm", "-s", style_image), "unsupported output extension")
    for name, word in (("truncated", "truncated"), ("truncated_moov", "moov"), ("text", "not a video"),
                       ("image", "still image")):
        usage_error(invoke(clips[name], "-o", out, "-s", style_image), str(clips[name]), word)
    usage_error(invoke(tmp_path / "nope.mp4", "-o", out, "-s", style_image), "no such file")
    before = clip.read_bytes()
    usage_error(invoke(clip, "-o", clip, "-s", style_image, "--overwrite"), "is the input file")
    assert clip.read_bytes() == before
    out.write_bytes(b"keep me")
    usage_error(invoke(clip, "-o", out, "-s", style_image), "exists", "--overwrite")
    assert out.read_bytes() == b"keep me"
    assert not out.with_name("o.webm").exists() and leftovers(tmp_path) == []


def test_cli_help() -> None:
    res = runner.invoke(cli_app(), ["video", "--help"])
    assert res.exit_code == 0
    for word in ("--style", "--to", "--keyframes", "--ease", "--strength", "--preserve-color", "--batch",
                 "--max-side", "--quality", "--device", "--json", "--overwrite"):
        assert word in res.stdout


# ------------------------------------------------------------------------------------------ errors, workers


def test_video_errors_are_metastyle_errors(clips, tmp_path: Path) -> None:
    """One taxonomy: exit codes on the classes, one-line messages that name files but no command-line flags."""
    from metastyle_batch.errors import MetastyleError, OutputExistsError
    from metastyle_batch.video import VideoExistsError, check_destination

    assert issubclass(VideoError, MetastyleError) and VideoError.exit_code == 1
    assert issubclass(VideoInputError, VideoError) and VideoInputError.exit_code == 2
    assert issubclass(KeyframeError, MetastyleError) and issubclass(KeyframeError, ValueError)
    assert KeyframeError.exit_code == 2
    assert str(VideoError("a\nb.mp4", "bad\n  thing")) == "a\\nb.mp4: bad thing"
    out = tmp_path / "o.mp4"
    out.write_bytes(b"x")
    raised = []
    for dst, overwrite in ((out, False), (tmp_path, True), (clips["clip"], True)):
        with pytest.raises(VideoError) as exc:
            check_destination(clips["clip"], dst, overwrite)
        assert exc.value.exit_code == 2
        raised.append(exc.value)
    assert isinstance(raised[0], VideoExistsError) and isinstance(raised[0], OutputExistsError)
    assert not any(isinstance(e, OutputExistsError) for e in raised[1:])  # --overwrite would not help there
    with pytest.raises(KeyframeError) as kexc:
        parse_keyframes("")
    with pytest.raises(VideoError) as vexc:
        stylize_video(Identity(), clips["clip"], out, "style")
    for e in [*raised, kexc.value, vexc.value]:
        assert "--" not in str(e), str(e)


@pytest.mark.parametrize("keys", ["fixed", "transition"])
def test_parallel_workers_give_the_same_frames(stylizer, clips, tmp_path: Path, style_image: Path,
                                               style_image2: Path, keys: str) -> None:
    """Two batches computed at once (the CPU default with 2+ torch threads) write exactly what one worker does,
    for one network and for per-frame codes; against the old default (one worker, all torch threads) within
    1/255 before encoding (CRF 0, so the RGB → YUV 4:2:0 rounding can make that 2/255 after it)."""
    from metastyle_batch.video import transition

    style = style_image if keys == "fixed" else transition(style_image, style_image2)
    kw = dict(max_side=96, batch=2, quality=100, overwrite=True)
    one = stylize_video(stylizer, clips["noaudio"], tmp_path / "one.mp4", style, workers=1, **kw)
    two = stylize_video(stylizer, clips["noaudio"], tmp_path / "two.mp4", style, workers=2, **kw)
    assert (one["workers"], two["workers"], two["frames"]) == (1, 2, 60)
    assert np.array_equal(decode(tmp_path / "one.mp4"), decode(tmp_path / "two.mp4"))
    assert two["flicker"] == pytest.approx(one["flicker"], abs=1e-4)

    torch.set_num_threads(2)  # the fixture restores it
    old = stylize_video(stylizer, clips["noaudio"], tmp_path / "old.mp4", style, workers=1, **kw)
    new = stylize_video(stylizer, clips["noaudio"], tmp_path / "new.mp4", style, **kw)
    assert (old["threads"], new["workers"], new["threads"]) == (2, 2, 1)
    assert torch.get_num_threads() == 2  # given back after the run
    a, b = decode(tmp_path / "old.mp4").astype(np.int16), decode(tmp_path / "new.mp4").astype(np.int16)
    assert np.abs(a - b).max() <= 2 and mad(a, b) < 0.05  # equal here; thread counts may reorder float sums


def test_parallel_workers_failure_leaves_nothing(clips, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="simulated"):
        stylize_video(Identity(fail_at=30), clips["clip"], out, "style", batch=2, workers=2)
    assert not out.exists() and leftovers(tmp_path) == []
    stats = stylize_video(Identity(), clips["clip"], out, "style", batch=3, workers=2)
    assert stats["frames"] == 60 and mad(decode(out), decode(clips["clip"])) < 3.0
