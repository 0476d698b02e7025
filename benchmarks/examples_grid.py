"""The README's picture: every example photo in every example style, by the shipped model.

    python benchmarks/examples_grid.py            # → docs/examples_grid.jpg

Only ``examples/`` is used (freely licensed, see examples/SOURCES.md): the research-only eval images never
end up in the repository. Top row: the styles; first column: the photos.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metastyle_batch.grid import save_grid  # noqa: E402
from metastyle_batch.images import read_image  # noqa: E402
from metastyle_batch.runtime import open_stylizer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "examples_grid.jpg")
    ap.add_argument("--cell", type=int, default=256)
    args = ap.parse_args()
    stylizer = open_stylizer(device="auto", disk_cache=False)
    photos = sorted((REPO / "examples" / "content").glob("*.jpg"))
    styles = sorted((REPO / "examples" / "style").glob("*.jpg"))
    codes = [stylizer.encode(s) for s in styles]
    rows = [[None] + [read_image(s).frames[0] for s in styles]]
    for photo in photos:
        img = read_image(photo).frames[0]
        rows.append([img] + [stylizer.stylize(img, code) for code in codes])
    save_grid(rows, args.out, cell=args.cell)
    print(f"wrote {args.out} ({len(photos)} photos x {len(styles)} styles, model {stylizer.model_id})")


if __name__ == "__main__":
    main()
