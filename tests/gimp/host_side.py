"""Host half of the real-GIMP test (run by run_gimp_test.sh with the project's Python; not a pytest file).

``prepare WORK EXE PLUGIN``: writes the test images, ``cases.json`` (what gimp_checks.py runs inside GIMP)
and the expected results, made by running the *same* command line the plug-in builds (its own
``build_command``) directly on the host.

``check WORK``: reads what GIMP wrote (``results.json`` and raw RGBA dumps of the layers) and asserts that
the plug-in's layers hold exactly the core's stylization, with alpha, offsets, selection and masks right.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 192, 128  # the test layer
CANVAS_OFFSET = (10, 5)  # the layer sits at this offset inside a larger canvas
SELECTION = (64, 40, 48, 32)  # x, y, w, h in layer coordinates (a plain rectangle)


def load_plugin(path: str):
    spec = importlib.util.spec_from_file_location("metastyle_gimp_plugin", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports without GIMP: its gi imports are guarded
    return module


def content_rgba() -> np.ndarray:
    """Gradients, a disc, stripes; a fully transparent corner (with colour under it) and a half-transparent band."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    yn, xn = y / (H - 1), x / (W - 1)
    rgb = np.stack([0.5 + 0.4 * np.sin(5 * xn * np.pi) * (1 - 0.5 * yn), 0.2 + 0.7 * yn,
                    0.5 + 0.4 * np.cos(3 * (xn + yn) * np.pi)], axis=-1)
    disc = (y - 70) ** 2 + (x - 110) ** 2 < 30 ** 2
    rgb[disc] = (0.9, 0.3, 0.1)
    rgb[(np.sin(40 * yn) > 0.85)] *= 0.4
    alpha = np.full((H, W), 1.0, np.float32)
    alpha[(x + y) < 40] = 0.0
    alpha[(y > 100) & (y < 110)] = 0.5
    return (np.clip(np.dstack([rgb, alpha]), 0, 1) * 255).round().astype(np.uint8)


def style_images(work: Path) -> tuple[Path, Path]:
    y, x = np.mgrid[0:64, 0:64] / 64.0
    a = np.dstack([0.2 + 0.2 * np.sin(x * 25), 0.3 + 0.3 * np.cos((x + y) * 18) ** 2, 0.6 + 0.4 * np.sin(y * 30)])
    b = np.dstack([0.8 + 0.2 * (np.floor(x * 4) % 2), 0.4 + 0.3 * (np.floor(y * 5) % 2), 0.1 + 0.2 * x])
    paths = work / "style_blue.png", work / "style_warm.png"
    for arr, path in zip((a, b), paths):
        Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8)).save(path)
    return paths


def run_cli(plugin, exe: str, src: Path, dest: Path, **options) -> None:
    cmd = plugin.build_command(exe, str(src), str(dest), **options)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"expected-result run failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")
    assert plugin.parse_result(done.returncode, done.stdout, done.stderr) == str(dest)


def prepare(work: Path, exe: str, plugin_path: str) -> None:
    plugin = load_plugin(plugin_path)
    content = content_rgba()
    Image.fromarray(content, "RGBA").save(work / "content.png")
    style, style2 = style_images(work)
    (work / "notimage.png").write_text("this is not an image\n")
    region = plugin.expand_region(*SELECTION, W, H)
    rx, ry, rw, rh = region
    Image.fromarray(content[ry:ry + rh, rx:rx + rw], "RGBA").save(work / "content_region.png")
    blend = dict(style=str(style), style2=str(style2), mix=0.3, strength=0.6, preserve_color=True)
    run_cli(plugin, exe, work / "content.png", work / "expected_full.png", style=str(style))
    run_cli(plugin, exe, work / "content_region.png", work / "expected_region.png", style=str(style))
    run_cli(plugin, exe, work / "content_region.png", work / "expected_region_blend.png", **blend)
    cases = {
        "canvas_offset": CANVAS_OFFSET,
        "selection": SELECTION,
        "region": region,
        "cases": [
            {"name": "new_layer", "selection": False, "output": "new-layer", "style": str(style)},
            {"name": "replace_in_selection", "selection": True, "output": "replace", "style": str(style)},
            {"name": "blend_new_layer_in_selection", "selection": True, "output": "new-layer", **blend},
            {"name": "grayscale_new_layer", "selection": False, "output": "new-layer", "style": str(style),
             "grayscale": True},
            {"name": "bad_style_file", "selection": False, "output": "new-layer", "style": str(work / "notimage.png")},
            {"name": "moved_executable", "selection": False, "output": "new-layer", "style": str(style),
             "break_executable": True},
        ],
    }
    (work / "cases.json").write_text(json.dumps(cases, indent=1))
    print(f"[gimp-test] prepared images and expected results in {work} (selection region {region})", file=sys.stderr)


# ------------------------------------------------------------------------------------------ check


def rgba(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA"))


def dump(work: Path, info: dict, channels: int = 4) -> np.ndarray:
    raw = (work / info["dump"]).read_bytes()
    return np.frombuffer(raw, np.uint8).reshape(info["height"], info["width"], channels)


def diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def check(work: Path) -> None:
    setup = json.loads((work / "cases.json").read_text())
    results = {r["name"]: r for r in json.loads((work / "results.json").read_text())}
    content = content_rgba()
    ox, oy = setup["canvas_offset"]
    sx, sy, sw, sh = setup["selection"]
    rx, ry, rw, rh = setup["region"]
    failures: list[str] = []

    def expect(ok: bool, what: str) -> None:
        (print if ok else failures.append)(("ok: " if ok else "") + what)

    opaque = content[..., 3] == 255

    r = results["new_layer"]
    expect(r["status"] == "SUCCESS", f"new_layer: procedure status {r['status']} {r.get('message') or ''}".strip())
    if r["status"] == "SUCCESS":
        new, old = r["layers"][0], r["layers"][1]
        expect(len(r["layers"]) == 2, f"new_layer: image has {len(r['layers'])} layers (want 2)")
        expect("MetaStyle: style_blue" in new["name"], f"new_layer: new layer on top, named {new['name']!r}")
        expect((new["x"], new["y"], new["width"], new["height"]) == (ox, oy, W, H),
               f"new_layer: at {new['x']},{new['y']} size {new['width']}x{new['height']} (want {ox},{oy} {W}x{H})")
        expect(not new["has_mask"], "new_layer: no mask without a selection")
        pixels, expected = dump(work, new), rgba(work / "expected_full.png")
        expect(diff(pixels, expected) <= 1, f"new_layer: pixels equal the CLI's own result (max diff {diff(pixels, expected)})")
        expect(diff(pixels[..., 3], content[..., 3]) == 0, "new_layer: alpha kept exactly")
        change = float(np.abs(pixels[..., :3].astype(np.int16) - content[..., :3])[opaque].mean())
        expect(change > 8.0, f"new_layer: stylized (mean change {change:.1f} levels vs the original)")
        expect(float(pixels[..., :3][opaque].std()) > 5.0, "new_layer: result is not flat")
        expect(diff(dump(work, old), content) == 0, "new_layer: original layer untouched")

    r = results["replace_in_selection"]
    expect(r["status"] == "SUCCESS", f"replace_in_selection: procedure status {r['status']} {r.get('message') or ''}".strip())
    if r["status"] == "SUCCESS":
        expect(len(r["layers"]) == 1, f"replace_in_selection: image has {len(r['layers'])} layer(s) (want 1)")
        pixels = dump(work, r["layers"][0])
        inside = np.zeros((H, W), bool)
        inside[sy:sy + sh, sx:sx + sw] = True
        expected = rgba(work / "expected_region.png")[sy - ry:sy - ry + sh, sx - rx:sx - rx + sw]
        d_in = diff(pixels[sy:sy + sh, sx:sx + sw], expected)
        expect(d_in <= 1, f"replace_in_selection: inside the selection = the CLI's result (max diff {d_in})")
        d_out = diff(pixels[~inside], content[~inside])
        expect(d_out == 0, f"replace_in_selection: outside the selection untouched (max diff {d_out})")
        change = float(np.abs(pixels[inside][:, :3].astype(np.int16) - content[inside][:, :3]).mean())
        expect(change > 8.0, f"replace_in_selection: stylized inside (mean change {change:.1f} levels)")

    r = results["blend_new_layer_in_selection"]
    expect(r["status"] == "SUCCESS", f"blend_new_layer_in_selection: status {r['status']} {r.get('message') or ''}".strip())
    if r["status"] == "SUCCESS":
        new = r["layers"][0]
        expect("style_blue + style_warm" in new["name"], f"blend: new layer named {new['name']!r}")
        expect((new["x"], new["y"], new["width"], new["height"]) == (ox + rx, oy + ry, rw, rh),
               f"blend: layer covers the selection plus margin at {new['x']},{new['y']} {new['width']}x{new['height']}")
        pixels, expected = dump(work, new), rgba(work / "expected_region_blend.png")
        expect(diff(pixels, expected) <= 1, f"blend: two styles, mix, strength, preserve colours = the CLI's result "
                                            f"(max diff {diff(pixels, expected)})")
        expect(new["has_mask"], "blend: the new layer has a selection mask")
        if new["has_mask"]:
            mask = dump(work, new["mask"], 1)[..., 0]
            want = np.zeros((rh, rw), np.uint8)
            want[sy - ry:sy - ry + sh, sx - rx:sx - rx + sw] = 255
            expect(diff(mask, want) == 0, "blend: mask is white exactly inside the selection")
        plain = rgba(work / "expected_region.png")
        expect(diff(pixels, plain) > 8, "blend: options changed the result (differs from the single-style run)")

    r = results["grayscale_new_layer"]
    expect(r["status"] == "SUCCESS", f"grayscale: procedure status {r['status']} {r.get('message') or ''}".strip())
    if r["status"] == "SUCCESS":
        expect(r["base_type"] == "gray" and len(r["layers"]) == 2, f"grayscale: a {r['base_type']} image with "
                                                                   f"{len(r['layers'])} layers (want gray, 2)")
        new, old = dump(work, r["layers"][0]), dump(work, r["layers"][1])
        expect(diff(new[..., 0], new[..., 1]) == 0 and diff(new[..., 1], new[..., 2]) == 0,
               "grayscale: the new layer is grey like its image")
        expect(diff(new[..., 3], content[..., 3]) == 0, "grayscale: alpha kept exactly")
        change = float(np.abs(new[..., 0].astype(np.int16) - old[..., 0])[opaque].mean())
        expect(change > 8.0, f"grayscale: stylized (mean change {change:.1f} levels)")

    r = results["bad_style_file"]
    expect(r["status"] == "EXECUTION_ERROR", f"bad_style_file: status {r['status']} (want EXECUTION_ERROR)")
    expect("notimage.png" in (r.get("message") or ""), f"bad_style_file: GIMP error message: {r.get('message')!r}")
    expect(len(r["layers"]) == 1, "bad_style_file: no layer added")

    r = results["moved_executable"]
    expect(r["status"] == "EXECUTION_ERROR", f"moved_executable: status {r['status']} (want EXECUTION_ERROR)")
    expect("metastyle-batch gimp install" in (r.get("message") or ""),
           f"moved_executable: GIMP error message: {r.get('message')!r}")
    expect(len(r["layers"]) == 1, "moved_executable: no layer added")

    if failures:
        for f in failures:
            print("FAILED: " + f)
        sys.exit(f"{len(failures)} check(s) failed")
    print(f"all {len(setup['cases'])} GIMP cases checked out ({sum(r['seconds'] for r in results.values()):.1f} s "
          "inside GIMP)")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 3 and sys.argv[1] == "check":
        check(Path(sys.argv[2]))
    else:
        sys.exit("usage: host_side.py prepare WORK EXE PLUGIN | check WORK")
