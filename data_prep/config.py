"""Stage configuration for data preparation, and the dict -> frozen-dataclass helper every stage uses.

Tune and YAML files pass plain dicts; each stage converts them at its boundary with
`config_from_dict`, which refuses unknown keys (a typo must not silently fall back to a default).
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, TypeVar

from data_prep.errors import ConfigError

T = TypeVar("T")


def config_from_dict(cls: type[T], values: Mapping[str, Any] | None, *, what: str | None = None) -> T:
    """Build frozen dataclass `cls` from `values`; unknown keys raise ConfigError listing valid ones."""
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown {what or cls.__name__} key(s) {unknown}; valid keys: {sorted(names)}"
        )
    hints = typing.get_type_hints(cls)
    for key, value in list(values.items()):
        # YAML/JSON give lists where the dataclass holds tuples (frozen, hashable).
        if isinstance(value, list) and "tuple" in str(hints.get(key, "")):
            values[key] = tuple(value)
    return cls(**values)


def read_mapping_file(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML (or JSON) file holding one mapping of settings; ConfigError naming the file otherwise."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML/JSON ({exc})") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of {what} settings, got {type(values).__name__}")
    return values


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as JSON next to the artifacts it produced."""
    Path(path).write_text(json.dumps(config_to_dict(cfg), indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class PrepConfig:
    source: str = "demo"  # "demo", a class-folder dir, a CSV manifest (.csv) or an .npz file
    seed: int = 0  # split seed: same input + seed -> byte-identical manifest
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)  # train, val, test; must sum to 1
    use_given_split: bool = False  # keep the source's split (npz keys, split folders, CSV split column); val carved from train if absent
    resplit: bool = False  # split folders / CSV split column: pool their images and split anew (fractions, seed)
    move_crossing_groups: bool = False  # given split: a patient (group) in several splits moves whole to the most held-out one; False = error
    label_map: tuple[tuple[str, str], ...] = ()  # (source class, task class) pairs; empty = keep classes
    positive_class: str | None = None  # task class treated as positive; None = least frequent in train
    channels: int = 3  # 1 (grayscale) or 3 (RGB): how images are decoded everywhere downstream
    image_size: int = 64  # side in pixels that shards and training resize to
    skip_bad: bool = False  # unreadable images: False = fail listing all, True = report and skip them
    allow_outside_root: bool = False  # CSV paths may point outside the CSV's folder only when True
    demo_num_majority: int = 1000  # demo dataset: images of the majority class ("benign")
    demo_num_minority: int = 100  # demo dataset: images of the minority class ("malignant")
    demo_image_size: int = 64  # demo dataset: side in pixels of the generated RGB images

    def __post_init__(self) -> None:
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions):
            raise ConfigError(f"fractions must be three non-negative numbers (train, val, test), got {self.fractions}")
        if abs(sum(self.fractions) - 1.0) > 1e-6:
            raise ConfigError(f"fractions must sum to 1, got {self.fractions} (sum {sum(self.fractions):.4f})")
        if self.fractions[0] <= 0:
            raise ConfigError(f"the train fraction must be > 0, got {self.fractions}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if self.image_size < 8:
            raise ConfigError(f"image_size must be >= 8 pixels, got {self.image_size}")
        if self.use_given_split and self.resplit:
            raise ConfigError("use_given_split and resplit exclude each other: keep the source's split "
                              "(--use-given-split) or pool and split anew (--resplit)")
        if self.demo_num_majority < 3 or self.demo_num_minority < 3:
            raise ConfigError("demo_num_majority and demo_num_minority must each be >= 3")


def parse_label_map(text: str | None) -> tuple[tuple[str, str], ...]:
    """'MT_Blowhole=defect,MT_Free=good' -> (("MT_Blowhole", "defect"), ("MT_Free", "good"))."""
    if not text:
        return ()
    pairs = []
    for item in text.split(","):
        if "=" not in item:
            raise ConfigError(f"label map entry {item!r} is not SOURCE=TASK (e.g. MT_Crack=defect)")
        src, dst = (s.strip() for s in item.split("=", 1))
        if not src or not dst:
            raise ConfigError(f"label map entry {item!r} has an empty side")
        pairs.append((src, dst))
    return tuple(pairs)
