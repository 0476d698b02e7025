# GIMP half of the real-GIMP test: fed to `gimp-console-3.0 --batch-interpreter=python-fu-eval --batch -`
# by run_gimp_test.sh (GIMP's own Python, inside the trixie chroot; not a pytest file).
#
# For every case in $METASTYLE_GIMP_WORK/cases.json: load the test image, put its layer at an offset in a
# larger canvas, maybe select a rectangle, look the plug-in's procedure up in the PDB, fill its config and
# run it as any script would. What came out (status, error message, layers with their raw RGBA pixels and
# masks) goes to results.json and *.rgba files; host_side.py judges them.
import json
import os
import time
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

WORK = os.environ["METASTYLE_GIMP_WORK"]
PROCEDURE = "python-fu-metastyle"
PLUGIN_DIR = os.path.join(os.environ["HOME"], ".config", "GIMP", "3.0", "plug-ins", "metastyle")


def log(text):
    print("[gimp] " + text, flush=True)


def pixels(drawable, fmt, name):
    w, h = drawable.get_width(), drawable.get_height()
    data = drawable.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, fmt, Gegl.AbyssPolicy.NONE)
    with open(os.path.join(WORK, name), "wb") as f:
        f.write(bytes(data))
    return {"dump": name, "width": w, "height": h}


def describe(image, case_name):
    layers = []
    for i, layer in enumerate(image.get_layers()):
        _, x, y = layer.get_offsets()
        info = {"name": layer.get_name(), "x": x, "y": y, "has_mask": layer.get_mask() is not None}
        info.update(pixels(layer, "R'G'B'A u8", f"{case_name}-layer{i}.rgba"))
        if info["has_mask"]:
            info["mask"] = pixels(layer.get_mask(), "Y u8", f"{case_name}-layer{i}-mask.gray")
        layers.append(info)
    return layers


def run_case(procedure, setup, case):
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(os.path.join(WORK, "content.png")))
    layer = image.get_layers()[0]
    ox, oy = setup["canvas_offset"]
    image.resize(layer.get_width() + 2 * ox, layer.get_height() + 2 * oy, ox, oy)  # layer now at (ox, oy)
    if case.get("grayscale"):
        image.convert_grayscale()
    if case["selection"]:
        sx, sy, sw, sh = setup["selection"]
        image.select_rectangle(Gimp.ChannelOps.REPLACE, ox + sx, oy + sy, sw, sh)

    config = procedure.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    config.set_property("style", Gio.File.new_for_path(case["style"]))
    if case.get("style2"):
        config.set_property("style2", Gio.File.new_for_path(case["style2"]))
        config.set_property("mix", case["mix"])
    config.set_property("strength", case.get("strength", 1.0))
    config.set_property("preserve-color", case.get("preserve_color", False))
    config.set_property("output", case["output"])

    record = os.path.join(PLUGIN_DIR, "metastyle-batch.path")
    saved = None
    if case.get("break_executable"):  # the user deleted or moved the venv after installing
        with open(record) as f:
            saved = f.read()
        with open(record, "w") as f:
            f.write("/nonexistent/venv/bin/metastyle-batch\n")
    t0 = time.monotonic()
    try:
        values = procedure.run(config)
    finally:
        if saved is not None:
            with open(record, "w") as f:
                f.write(saved)
    seconds = time.monotonic() - t0
    status = values.index(0)
    message = values.index(1) if status != Gimp.PDBStatusType.SUCCESS and values.length() > 1 else None
    result = {"name": case["name"], "status": status.value_nick.upper().replace("-", "_"), "message": message,
              "base_type": image.get_base_type().value_nick,
              "seconds": round(seconds, 2), "layers": describe(image, case["name"])}
    image.delete()
    return result


def main():
    with open(os.path.join(WORK, "cases.json")) as f:
        setup = json.load(f)
    procedure = Gimp.get_pdb().lookup_procedure(PROCEDURE)
    if procedure is None:
        raise SystemExit(f"GIMP did not register {PROCEDURE}: the plug-in in {PLUGIN_DIR} was not loaded")
    log(f"found {PROCEDURE}: menu {procedure.get_menu_paths()} label {procedure.get_menu_label()!r}")
    results = []
    for case in setup["cases"]:
        try:
            result = run_case(procedure, setup, case)
        except Exception:
            traceback.print_exc()
            result = {"name": case["name"], "status": "CRASHED", "message": traceback.format_exc(), "seconds": 0,
                      "layers": []}
        log(f"{case['name']}: {result['status']} in {result['seconds']} s"
            + (f" - message: {result['message']}" if result["message"] else ""))
        results.append(result)
    with open(os.path.join(WORK, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


main()
