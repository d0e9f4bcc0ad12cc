"""Data preparation: image sources -> seeded, stratified split manifest -> Ray Data shards.

    python -m data_prep --source demo --out runs/demo          # built-in demo set
    python -m data_prep --source ~/isic/ --out runs/isic       # one folder per class
    python -m data_prep --source labels.csv --out runs/x       # path,label[,group]
    python -m data_prep --source breastmnist.npz --use-given-split --out runs/breast
    python -m data_prep --source ~/xray/ --use-given-split --out runs/xray   # ~/xray/{train,val,test}/<class>/
"""
from data_prep.config import PrepConfig, config_from_dict, parse_label_map
from data_prep.errors import ConfigError, DataError, LeakageError
from data_prep.manifest import (Manifest, add_synthetic_rows, build_manifest, check_no_leakage,
                                read_manifest, write_manifest)


def prepare(cfg: PrepConfig, out_dir, progress: bool = True) -> Manifest:
    """Scan cfg.source, split it, and write out_dir/manifest.parquet (+ prep_config.json)."""
    from pathlib import Path

    from data_prep.config import save_config
    from data_prep.sources import scan_source

    out_dir = Path(out_dir)
    scan = scan_source(cfg.source, skip_bad=cfg.skip_bad, allow_outside_root=cfg.allow_outside_root,
                       demo_dir=out_dir, demo_counts=(cfg.demo_num_majority, cfg.demo_num_minority),
                       demo_size=cfg.demo_image_size, progress=progress)
    m = build_manifest(scan, cfg)
    write_manifest(m, out_dir / "manifest.parquet")
    save_config(cfg, out_dir / "prep_config.json")
    return m


__all__ = ["PrepConfig", "Manifest", "prepare", "read_manifest", "write_manifest", "build_manifest",
           "check_no_leakage", "add_synthetic_rows", "config_from_dict", "parse_label_map",
           "DataError", "LeakageError", "ConfigError"]
