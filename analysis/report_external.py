"""The report's section on external synthetic sets (--external NAME=DIR, sweeps/external.py): what each set was,
how good, whether it leaks held-out images (a refused set is said at the top of the report, loudly), the ratio
chosen for it, and a grid of its images. Reads <sweep>/external/<name>/audit.json beside results.parquet.
pandas/numpy/PIL only.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.document import Doc, fnum


def external_records(base: Path | None) -> list[dict]:
    """The audit records of the sweep's external sets, each with the judgement sweep_state.json keeps for it (gate,
    ratios, refused, leaky), in the order given to the sweep (the state's), else by name; [] when base is None or
    holds no external/ folder."""
    if base is None or not (Path(base) / "external").is_dir():
        return []
    try:
        judged = json.loads((Path(base) / "sweep_state.json").read_text()).get("external") or {}
    except (OSError, ValueError):
        judged = {}
    out = []
    for f in sorted((Path(base) / "external").glob("*/audit.json")):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        state = judged.get(rec.get("name", "")) or {}
        out.append({**rec, **{k: state[k] for k in ("gate", "gate_note", "ratios", "refused", "leaky") if k in state},
                    "folder": str(f.parent)})
    order = list(judged)
    return sorted(out, key=lambda r: (order.index(r["name"]) if r.get("name") in order else len(order),
                                      str(r.get("name"))))


def refused_warnings(base: Path | None) -> list[str]:
    """Lines for the top of the report: each set refused for a leak or judged anyway though leaky."""
    out = []
    for rec in external_records(base):
        if rec.get("refused", "").startswith("LEAK"):
            out.append(f"**External set '{rec['name']}' was REFUSED as an arm**: {rec['refused']}.")
        elif rec.get("leaky"):
            out.append(f"**External set '{rec['name']}' holds near-copies of real held-out images** "
                       f"({rec.get('leak_val_copies', 0)} validation, {rec.get('leak_test_copies', 0)} test) and was "
                       "judged anyway (--allow-leaky): its test numbers are likely inflated.")
    return out


def external_section(doc: Doc, out: Path, base: Path | None, df: pd.DataFrame) -> None:
    recs = external_records(base)
    if not recs:
        return
    doc.h(2, "External synthetic sets")
    rows = []
    for r in recs:
        rows.append({"Set": r["name"], "Source": r.get("source", ""), "Minority images": r.get("n_images", ""),
                     "KID (val ref)": fnum(r.get("gan_kid", math.nan), 4),
                     "Recall vs real": fnum(r.get("gan_recall_vs_real", math.nan), 2),
                     "Diversity vs real": fnum(r.get("gan_diversity_vs_real", math.nan), 2),
                     "Gate": r.get("gate", ""),
                     "Leak: val / test copies": f"{r.get('leak_val_copies', '?')} / {r.get('leak_test_copies', '?')}",
                     "Val / test images with a train twin": f"{r.get('leak_val_with_train_twin', '?')} / "
                                                            f"{r.get('leak_test_with_train_twin', '?')}",
                     "Arm": ("REFUSED: " + r["refused"]) if r.get("refused") else
                            "yes, ratios " + ", ".join(f"{x:g}" for x in r.get("ratios", []))})
    doc.table(pd.DataFrame(rows), "external_sets.csv")
    doc.p("Each set was imported once (its minority images resized like the real ones), then judged as our GANs "
          "are: quality against the same real validation minority images (recall and diversity as a share of the "
          "real training images' own; 1 = as good as real images), the same quality gate, and a leak audit: a "
          "synthetic image within pixel RMS 0.03 of a real validation or test image is a near-exact copy of it "
          "(except copies of held-out images that have such a twin in train, the data set's own duplicates: a "
          "generator that saw only train could make those, so they are counted apart; many twins mean the split "
          "itself leaks). A set with such copies is refused as an arm "
          "unless --allow-leaky names it. The ratio and classifier LR of each arm were chosen on real validation; "
          "its test numbers and paired comparison vs the best control are in the headline (secondary claims, "
          "Holm-corrected among the external sets).")
    for r in recs:
        grid = _grid(Path(r["folder"]) / "synthetic", out / f"external_{_safe(r['name'])}.png")
        if grid is not None:
            doc.image(grid, f"External set '{r['name']}': its first {GRID * GRID} minority images as the classifier "
                            "sees them" + (" (REFUSED)" if r.get("refused") else ""))


GRID = 6


def _grid(folder: Path, dest: Path) -> Path | None:
    from PIL import Image

    files = sorted(folder.glob("*.png"))[:GRID * GRID]
    if not files:
        return None
    imgs = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    h, w = imgs[0].shape[:2]
    canvas = np.full((GRID * (h + 2), GRID * (w + 2), 3), 255, np.uint8)
    for i, im in enumerate(imgs):
        y, x = divmod(i, GRID)
        canvas[y * (h + 2):y * (h + 2) + h, x * (w + 2):x * (w + 2) + w] = im[:h, :w]
    scale = max(1, round(384 / canvas.shape[0]))
    Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST).save(dest)
    return dest


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)
