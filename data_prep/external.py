"""Synthetic images made elsewhere (another GAN, a diffusion model, a colleague's code) as synthetic rows.

    rows = external_rows("gen_out/", classes=["benign", "malignant"], positive_label=1)

Two layouts, no manifest needed:
  * a plain folder of images (png/jpg/jpeg/bmp/tif/tiff, any size or mode): every image is a minority image;
  * DIR/<class>/ folders named after the data set's classes: each image takes its folder's class (a conditional
    generator's output); the classifier draws the minority class's images only.
Only the folder's top level (plain layout) or its class folders' top level is read; other files and folders are
named in the error when nothing usable is found. Images are decoded and resized like real ones wherever they are
read (data_prep.arrays.decode_rows), so these rows are what `read_synthetic_rows` gives for our GANs' sets.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_prep.errors import DataError
from data_prep.images import IMAGE_SUFFIXES


def _images(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def external_layout(d: str | Path, classes: list[str]) -> dict[str, list[Path]]:
    """class name (or "" for a plain folder: the minority class) -> its image files. DataError when the folder
    is missing, holds no images, or mixes loose images with class folders."""
    d = Path(d).expanduser()
    if not d.is_dir():
        raise DataError(f"synthetic folder {d} does not exist or is not a folder; give a folder of images "
                        f"({', '.join(IMAGE_SUFFIXES)}) or one with a sub-folder per class ({classes})")
    subdirs = {p.name: p for p in d.iterdir() if p.is_dir()}
    class_dirs = {c: subdirs[c] for c in classes if c in subdirs}
    loose = _images(d)
    if class_dirs and loose:
        raise DataError(f"{d} holds {len(loose)} image(s) at its top level AND class folder(s) "
                        f"{sorted(class_dirs)}: use one layout (a plain folder of minority images, or one folder "
                        f"per class)")
    if class_dirs:
        out = {c: _images(p) for c, p in class_dirs.items()}
        if not any(out.values()):
            raise DataError(f"{d}: the class folder(s) {sorted(class_dirs)} hold no image files "
                            f"({', '.join(IMAGE_SUFFIXES)})")
        return out
    if not loose:
        others = sorted(subdirs)[:8]
        hint = (f"; its sub-folders {others} are not named after the data set's classes {classes}" if others else "")
        raise DataError(f"{d} holds no image files ({', '.join(IMAGE_SUFFIXES)}){hint}")
    return {"": loose}


def external_rows(d: str | Path, classes: list[str], positive_label: int, generator: str = "") -> pd.DataFrame:
    """Synthetic rows (data_prep.manifest.SYNTHETIC_COLUMNS, absolute sources) of a folder made elsewhere.
    A plain folder's images are labelled the minority class; DIR/<class>/ images their folder's class.
    Pixel hashes and sizes are left empty/0 (filled by whoever decodes them)."""
    layout = external_layout(d, classes)
    recs = []
    for cls, files in layout.items():
        label = positive_label if cls == "" else classes.index(cls)
        for f in files:
            recs.append({"image_id": f"ext:{generator or Path(d).name}:{cls + '/' if cls else ''}{f.name}",
                         "source": str(f.resolve()), "label": label, "label_name": classes[label], "sha256": "",
                         "generator": generator or f"external:{Path(d).name}", "width": 0, "height": 0,
                         "channels": 0})
    return pd.DataFrame(recs, columns=["image_id", "source", "label", "label_name", "sha256", "generator", "width",
                                       "height", "channels"])
