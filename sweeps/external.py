"""Synthetic sets made elsewhere, judged by the same protocol as our GANs: `--external NAME=DIR` (repeatable).

    python sweeps/augment_ratio.py --data skin.npz --external medigan=~/medigan_out --external diffusion=~/ddpm_out
    python sweeps/augment_ratio.py --data skin.npz --no-train-gan --external diffusion=~/ddpm_out   # externals only

The driver imports each set once, before any trial (import_externals): the folder's minority images (a plain
folder of images, or DIR/<class>/ folders: data_prep.external) decoded and resized like real images and written
as a synthetic set into the sweep's work dir (external/<name>/synthetic/, published to remote storage with the
data), then audited ONCE, as a GAN's sampled set is:
  * quality: the same metrics against the same real reference (FID/KID, precision/recall, diversity on the
    validation minority images; memorisation against train), the real-vs-real values beside them, the same
    quality gate (a gated set feeds no classifier: its confirm rows have status "gated", counted as no help);
  * leak audit: near-exact copies of real VALIDATION and TEST images (trainables.metrics.memorisation.
    held_out_copies: pixel RMS <= LEAK_RMS, the data set's own train/held-out duplicates excepted). A generator
    trained elsewhere may have seen our held-out images; a set with any such copy is refused as an arm (said on
    the console and at the top of the report) unless --allow-leaky NAME.
The record of each set is external/<name>/audit.json (the report reads it) and sweep_state.json's "external".

The arm (trainables.arms.EXTERNAL_ARM, rows' `external` = the name): in the confirm phase, the best control C's
settings + the set's images (stacked on C as the GAN is; the baseline's settings when there is no C) x every
synthetic ratio of the sweep the set is large enough for x the classifier-LR grid x the confirm seeds. The
ratio and the LR are chosen on real validation, within the confirm phase (analysis/picks.py), as each arm's LR
is. Seeds vary the classifier and which of the set's images are drawn. The external arms enter the headline with
their own paired comparison vs C, Holm-corrected among themselves and labelled secondary; with --no-train-gan
the first external set takes the GAN's place in the primary claim.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

from data_prep.errors import DataError
from sweeps.config import parse_external  # NAME=DIR entries -> {name: dir} (lives with the config)

EXTERNAL_DIR = "external"  # <work>/external/<name>/: synthetic/ (images + manifest), quality/, audit.json


def key(name: str) -> str:
    """The set's folder in the sweep's store (and work dir)."""
    return f"{EXTERNAL_DIR}/{name}"


def usable_ratios(sweep, n_images: int, n_minority_train: int) -> list[float]:
    """The sweep's synthetic ratios a set of n_images can serve (each ratio draws round(ratio x real minority))."""
    from trainables.classifier.data import n_synthetic_for

    return [float(r) for r in sorted(sweep.synthetic_ratios) if n_synthetic_for(r, n_minority_train) <= n_images]


def import_externals(sweep, data, store, say=print) -> dict[str, dict[str, Any]]:
    """Import, audit and judge every --external set (once: a resumed sweep reuses audit.json) -> {name: record}.
    record: name, source, n_images, ratios (usable), gan_* quality, gate, gate_note, leak_val/test counts,
    refused ("" or why the set is not an arm)."""
    from data_prep import read_manifest

    manifest = read_manifest(data.manifest)
    out = {}
    for name, src in parse_external(sweep.external).items():
        t = time.time()
        rec = _import_one(sweep, manifest, data, store, name, src)
        out[name] = rec
        say(describe(rec) + f" ({time.time() - t:.0f} s)")
    return out


def _import_one(sweep, manifest, data, store, name: str, src: str) -> dict[str, Any]:
    from data_prep.external import external_rows

    work = store.local(key(name))
    audit_path = work / "audit.json"
    if sweep.resume and audit_path.is_file():
        rec = json.loads(audit_path.read_text())
        if rec.get("source") == src:
            return _judge(rec, sweep)
    df = manifest.df[~manifest.df["is_synthetic"].astype(bool)]
    pos = manifest.positive_label
    rows = external_rows(src, list(manifest.classes), pos, generator=f"external:{name}")
    rows = rows[rows["label"] == pos].reset_index(drop=True)
    if rows.empty:
        raise DataError(f"external set {name!r} ({src}): no image of the minority class {manifest.positive_class!r}; "
                        f"give a plain folder of minority images or a {manifest.positive_class}/ sub-folder")
    pixels = _decode(rows, sweep, name)
    syn = work / "synthetic"
    _write_set(pixels, rows, syn, name, manifest)
    n_minority = int(((df["split"] == "train") & (df["label"] == pos)).sum())
    rec: dict[str, Any] = {"name": name, "source": src, "n_images": int(len(rows)),
                           "n_minority_train": n_minority, "synthetic_dir": str(syn)}
    rec.update(_quality(sweep, manifest, data, syn, work))
    from sweeps.quality import leak_audit

    rec.update(leak_audit(pixels, manifest, sweep, Path(data.work_dir) / "quality_cache"))
    audit_path.write_text(json.dumps(rec, indent=2, default=float))
    store.publish(key(name))  # remote storage: trials on any node fetch the set from the store
    return _judge(rec, sweep)


def _decode(rows, sweep, name: str):
    """Every image of the set at the sweep's size and channels; a file that cannot be read is named."""
    import numpy as np

    from data_prep.images import resize_uint8
    from data_prep.sources import decode_record

    out = np.empty((len(rows), sweep.image_size, sweep.image_size, sweep.channels), np.uint8)
    for i, src in enumerate(rows["source"]):
        try:
            out[i] = resize_uint8(decode_record(src, "", -1, sweep.channels), sweep.image_size)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL: truncated / not an image
            raise DataError(f"external set {name!r}: cannot read image {src} ({exc}); remove or re-save it") from exc
    return out


def _write_set(pixels, rows, syn: Path, name: str, manifest) -> None:
    """The decoded images as PNGs + a synthetic manifest (data_prep.manifest.write_synthetic_rows)."""
    import pandas as pd
    from PIL import Image

    from data_prep.images import image_sha256
    from data_prep.manifest import write_synthetic_rows

    syn.mkdir(parents=True, exist_ok=True)
    for old in syn.glob("*.png"):
        old.unlink()
    recs = []
    for i, (img, src) in enumerate(zip(pixels, rows["source"])):
        path = syn / f"{i:06d}.png"
        Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(path)
        recs.append({"image_id": f"external:{name}:{Path(src).name}", "source": str(path),
                     "label": manifest.positive_label, "label_name": manifest.positive_class,
                     "sha256": image_sha256(img), "generator": f"external:{name}:{Path(src).name}",
                     "width": img.shape[1], "height": img.shape[0], "channels": img.shape[2]})
    write_synthetic_rows(pd.DataFrame(recs), syn)


def _quality(sweep, manifest, data, syn: Path, work: Path) -> dict[str, Any]:
    """The set's quality against the sweep's real reference (sweeps.quality.audit_gan), as for a GAN's set."""
    if not sweep.gan_eval_every:
        return {}
    import torch

    from sweeps.quality import audit_gan, quality_evaluator

    device = "cuda" if sweep.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"
    return audit_gan(quality_evaluator(manifest, sweep, data, device), [syn], work / "quality")


def _judge(rec: dict[str, Any], sweep) -> dict[str, Any]:
    """The gate and the refusal, from the recorded audit and this run's settings (a resumed sweep re-judges)."""
    from sweeps.quality import quality_gate

    rec = dict(rec)
    rec["gate"], rec["gate_note"] = quality_gate(rec, sweep)
    rec["ratios"] = usable_ratios(sweep, rec["n_images"], rec["n_minority_train"])
    leaks = int(rec.get("leak_val_copies", 0)) + int(rec.get("leak_test_copies", 0))
    rec["leaky"] = leaks > 0
    rec["refused"] = ""
    if leaks and rec["name"] not in sweep.allow_leaky:
        rec["refused"] = (f"LEAK: {rec.get('leak_val_copies', 0)} image(s) are near-exact copies of real validation "
                          f"images and {rec.get('leak_test_copies', 0)} of real test images (pixel RMS <= "
                          f"{rec.get('leak_rms', 0):g}); its generator has likely seen the held-out images, so its "
                          f"test numbers would be inflated: refused as an arm (--allow-leaky {rec['name']} to judge it "
                          f"anyway, flagged)")
    elif not rec["ratios"]:
        from trainables.classifier.data import n_synthetic_for

        need = n_synthetic_for(min(sweep.synthetic_ratios), rec["n_minority_train"])
        rec["refused"] = (f"too few images: {rec['n_images']}, and the smallest synthetic ratio "
                          f"{min(sweep.synthetic_ratios):g} needs {need}; give more images or smaller ratios")
    return rec


def describe(rec: Mapping[str, Any]) -> str:
    """One console line per set: size, quality vs real, gate, leak audit, and whether it is an arm."""
    q = ""
    if rec.get("gan_kid") is not None:
        shares = [f"{label} {rec[c]:.2f}x real" for c, label in (("gan_recall_vs_real", "recall"),
                                                                  ("gan_diversity_vs_real", "diversity"))
                  if isinstance(rec.get(c), (int, float)) and rec[c] == rec[c]]
        q = f"; KID {rec['gan_kid']:.4f} ({', '.join(shares) or 'no real-vs-real value'}), gate {rec['gate']}"
    leak = (f"; leak audit: {rec.get('leak_val_copies', 0)} val / {rec.get('leak_test_copies', 0)} test near-copies"
            + (" (allowed: --allow-leaky, flagged)" if rec.get("leaky") and not rec.get("refused") else ""))
    status = (f"REFUSED: {rec['refused']}" if rec.get("refused") else
              f"an arm at ratio(s) {', '.join(f'{r:g}' for r in rec['ratios'])}")
    return f"external {rec['name']!r}: {rec['n_images']} minority image(s) from {rec['source']}{q}{leak}: {status}"


def arms(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The externals records that are arms (not refused), in the order given."""
    return [r for r in (state.get("external") or {}).values() if not r.get("refused")]


def trial_set(config: Mapping[str, Any], sweep, data, row: dict[str, Any]):
    """In a trial of an external arm: the set's folder on this node, and its recorded quality and gate in `row`
    (a gated set sets status "gated": no classifier uses it). -> the synthetic folder, or None."""
    from sweeps.artifacts import store_of
    from sweeps.quality import QUALITY_COLUMNS, REAL_REF_COLUMNS, quality_gate, with_shares

    store = store_of(data)
    folder = store.fetch(key(str(config["external"])))
    rec = json.loads((folder / "audit.json").read_text())
    cols = {*QUALITY_COLUMNS.values(), *REAL_REF_COLUMNS.values(), "gan_kid_reference", "gan_extractor",
            "leak_val_copies", "leak_test_copies"}
    row.update(with_shares({k: v for k, v in rec.items() if k in cols}))
    row["gan_gate"], note = quality_gate(row, sweep)
    if row["gan_gate"] == "gated":
        row.update(status="gated", error=f"external set {config['external']!r}: " + note)
        return None
    row["gan_gate_note"] = note
    return str(folder / "synthetic")
