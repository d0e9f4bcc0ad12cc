"""Issue 9: class-conditional DCGAN, feature-matching and perceptual (VGG16) losses, generator mixing.

Tiny on purpose (16-32 px, a few steps): wiring, gradients, exact counts and clear errors; the one
training test (conditional G on the demo set) runs a few hundred CPU steps.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import data_prep
from demo_data import make_demo
from data_prep.errors import ConfigError, DataError
from data_prep.manifest import read_manifest, write_synthetic_rows
from trainables.classifier.config import ClassifierConfig
from trainables.classifier.data import build_classifier_data, mix_counts, parse_synthetic_arg, synthetic_sources


# ---- generator mixing ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return read_manifest(make_demo(tmp_path_factory.mktemp("demo_mix"), 60, 30, size=16))


def make_synthetic(out_dir, n, generator, labels=(1,)):
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(map(ord, generator)))
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        img = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        path = out_dir / f"synthetic_{label}_{i:06d}.png"
        Image.fromarray(img).save(path)
        rows.append({"image_id": f"syn/{generator}/{i}", "source": str(path), "label": label,
                     "label_name": ["benign", "malignant"][label],
                     "sha256": data_prep.manifest.hashlib.sha256(img.tobytes()).hexdigest(),
                     "generator": generator, "width": 16, "height": 16, "channels": 3})
    write_synthetic_rows(pd.DataFrame(rows), out_dir)
    return out_dir


def test_mix_counts_largest_remainder_sum_exactly():
    assert mix_counts(10, [0.5, 0.25, 0.25]) == [5, 3, 2]  # 5, 2.5, 2.5: the tie goes to the earlier source
    assert mix_counts(7, [1 / 3] * 3) == [3, 2, 2]
    assert mix_counts(21, [0.5, 0.25, 0.25]) == [11, 5, 5]  # 10.5, 5.25, 5.25
    for n in range(0, 60):
        for props in ([0.5, 0.25, 0.25], [0.1, 0.9], [0.2] * 5, [1.0]):
            counts = mix_counts(n, props)
            assert sum(counts) == n
            assert all(abs(c - n * p) < 1 for c, p in zip(counts, props))


def test_mixed_synthetic_set_has_exact_proportions_and_keeps_sources(demo, tmp_path):
    dirs = [make_synthetic(tmp_path / name, 40, generator=f"gan-{name}") for name in ("bce", "hinge", "wgan")]
    n_min = int(((demo.df["split"] == "train") & (demo.df["label"] == demo.positive_label)).sum())
    cfg = ClassifierConfig(synthetic_ratio=1.5, seed=2)
    n = int(np.floor(1.5 * n_min + 0.5))
    data = build_classifier_data(demo, cfg, [(dirs[0], 0.5), (dirs[1], 0.25), (dirs[2], 0.25)])
    syn = data.train_rows[data.train_rows["is_synthetic"]]
    expect = mix_counts(n, [0.5, 0.25, 0.25])
    assert data.n_synthetic == len(syn) == n == sum(expect)
    got = syn["generator"].value_counts().to_dict()
    assert got == {"gan-bce": expect[0], "gan-hinge": expect[1], "gan-wgan": expect[2]}
    assert [s["n"] for s in data.summary()["synthetic_sources"]] == expect
    assert [s["generators"] for s in data.summary()["synthetic_sources"]] == [["gan-bce"], ["gan-hinge"], ["gan-wgan"]]
    assert not data.val_rows["is_synthetic"].any() and not data.test_rows["is_synthetic"].any()
    again = build_classifier_data(demo, cfg, {str(dirs[0]): 0.5, str(dirs[1]): 0.25, str(dirs[2]): 0.25})
    assert list(again.train_rows["image_id"]) == list(data.train_rows["image_id"])  # seeded, same draw
    # a single folder (old API) and a one-element mix draw the same rows
    one = build_classifier_data(demo, cfg, dirs[0])
    assert list(one.train_rows["image_id"]) == list(build_classifier_data(demo, cfg, [(dirs[0], 1.0)]).train_rows["image_id"])


def test_mix_proportions_must_sum_to_one(demo, tmp_path):
    a, b = make_synthetic(tmp_path / "a", 5, "a"), make_synthetic(tmp_path / "b", 5, "b")
    with pytest.raises(ConfigError, match=r"sum to 1, got 0.5 \+ 0.3 = 0.8"):
        build_classifier_data(demo, ClassifierConfig(synthetic_ratio=0.1), [(a, 0.5), (b, 0.3)])
    with pytest.raises(ConfigError, match="no proportion"):
        synthetic_sources([str(a), str(b)])
    with pytest.raises(ConfigError, match=">= 0"):
        synthetic_sources([(a, 1.5), (b, -0.5)])
    with pytest.raises(ConfigError, match="more than once"):
        synthetic_sources([(a, 0.5), (a, 0.5)])
    assert parse_synthetic_arg("runs/x:0.25") == ("runs/x", 0.25)
    assert parse_synthetic_arg("runs/x") == ("runs/x", None)


def test_conditional_folder_contributes_only_minority_rows(demo, tmp_path):
    both = make_synthetic(tmp_path / "both", 40, "cond", labels=(0, 1))
    data = build_classifier_data(demo, ClassifierConfig(synthetic_ratio=0.5), both)
    syn = data.train_rows[data.train_rows["is_synthetic"]]
    assert len(syn) == data.n_synthetic > 0 and (syn["label"] == demo.positive_label).all()
    only_benign = make_synthetic(tmp_path / "benign", 5, "b0", labels=(0,))
    with pytest.raises(DataError, match="minority class 'malignant'"):
        build_classifier_data(demo, ClassifierConfig(synthetic_ratio=0.1), only_benign)


def test_classifier_cli_parses_a_mix(demo, tmp_path):
    from trainables.classifier.__main__ import synthetic_arg

    a, b = make_synthetic(tmp_path / "a", 5, "a"), make_synthetic(tmp_path / "b", 5, "b")
    assert synthetic_arg([str(a)]) == str(a)
    assert synthetic_arg([f"{a}:0.5", f"{b}:0.5"]) == [(str(a), 0.5), (str(b), 0.5)]
    with pytest.raises(ConfigError, match="sum to 1"):
        synthetic_arg([f"{a}:0.5", f"{b}:0.4"])
    with pytest.raises(ConfigError, match="no proportion"):
        synthetic_arg([f"{a}:0.5", str(b)])


# ---- class-conditional DCGAN ----------------------------------------------------------------------------------
from trainables.gan.config import GanConfig, check_same_architecture, gan_config_from_dict  # noqa: E402
from trainables.gan.batching import array_batches  # noqa: E402
from trainables.gan.loop import GanTrainer, train_gan  # noqa: E402
from trainables.gan.losses import feature_matching_loss  # noqa: E402
from trainables.gan.networks import Discriminator, Generator  # noqa: E402
from trainables.gan.perceptual import PerceptualLoss, load_vgg16_features, vgg16_features  # noqa: E402
from trainables.gan.sample import generate_images, main as sample_main, write_samples  # noqa: E402


@pytest.fixture(scope="module")
def demo32(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("demo32"), 60, 30)


def _colour_features(a: np.ndarray) -> np.ndarray:
    """Centre-patch colour statistics (mean, std, chromaticity): the demo's malignant lesions are multi-coloured."""
    a = a.astype(np.float32) / 255
    c = a[:, 10:22, 10:22, :].reshape(len(a), -1, 3)
    chrom = c / (c.sum(-1, keepdims=True) + 1e-3)
    return np.concatenate([c.mean(1), c.std(1), chrom.mean(1)], 1)


def _real_data_classifier(manifest):
    """Balanced logistic regression on colour features of the REAL training images -> predict(uint8 NHWC)."""
    from data_prep.arrays import load_split_arrays

    x, y = load_split_arrays(manifest, "train", 32, 3, include_synthetic=False)
    f = _colour_features(x)
    mu, sd = f.mean(0), f.std(0) + 1e-6
    X, Y = torch.tensor((f - mu) / sd), torch.tensor(y)
    torch.manual_seed(0)
    lin = torch.nn.Linear(X.shape[1], 2)
    opt = torch.optim.Adam(lin.parameters(), 0.05)
    w = torch.stack([1 / (Y == 0).sum(), 1 / (Y == 1).sum()]).float()
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(X), Y, weight=w / w.sum() * 2).backward()
        opt.step()
    return lambda a: lin(torch.tensor((_colour_features(a) - mu) / sd)).argmax(1).detach().numpy()


def test_conditional_gan_samples_are_class_distinguishable_on_demo(demo32, tmp_path, one_thread):
    from trainables.gan.run import run_gan_local

    m = read_manifest(demo32)
    cfg = {"conditional": True, "image_size": 32, "ngf": 16, "ndf": 16, "latent_dim": 32, "batch_size": 16,
           "num_epochs": 80, "lr_g": 1e-3, "lr_d": 1e-3, "ema_decay": 0.99, "checkpoint_every": 1000,
           "sample_every": 0, "device": "cpu", "collapse_loss_d": 0}
    res = run_gan_local(demo32, tmp_path / "cgan", cfg, report=lambda r: None)
    assert res["status"] == "finished"
    saved = torch.load(res["checkpoint"], weights_only=True)
    assert saved["config"]["conditional"] is True and saved["config"]["classes"] == [0, 1]
    assert saved["meta"]["trained_label_names"] == ["benign", "malignant"]
    predict = _real_data_classifier(m)
    from data_prep.arrays import load_split_arrays
    held = [load_split_arrays(m, s, 32, 3, include_synthetic=False) for s in ("val", "test")]
    xh, yh = np.concatenate([h[0] for h in held]), np.concatenate([h[1] for h in held])
    p = predict(xh)
    real_bal_acc = np.mean([(p[yh == c] == c).mean() for c in (0, 1)])
    acc = {lab: float((predict(generate_images(res["checkpoint"], 40, seed=1, label=lab)) == i).mean())
           for i, lab in enumerate(("benign", "malignant"))}
    print(f"real held-out balanced accuracy {real_bal_acc:.3f}; conditional samples labelled as their class: {acc}")
    assert real_bal_acc > 0.65  # the judge itself works on real images
    assert min(acc.values()) > 0.6 and np.mean(list(acc.values())) > 0.75  # chance is 0.5

    # per-class files and rows
    out = write_samples(res["checkpoint"], 3, tmp_path / "syn", device="cpu", progress=False)
    rows = pd.read_parquet(out)
    assert sorted(p.name for p in (tmp_path / "syn").glob("*.png")) == [
        f"synthetic_{c}_{i:06d}.png" for c in ("benign", "malignant") for i in range(3)]
    assert rows.groupby("label_name")["label"].first().to_dict() == {"benign": 0, "malignant": 1}
    assert (rows["label_name"].value_counts() == 3).all() and rows["generator"].nunique() == 1
    only = write_samples(res["checkpoint"], 3, tmp_path / "syn_m", device="cpu", progress=False, labels=["malignant"])
    mal = pd.read_parquet(only)
    assert set(mal["label_name"]) == {"malignant"}
    assert list(mal["sha256"]) == list(rows.loc[rows["label_name"] == "malignant", "sha256"])  # noise: seed only


def test_balanced_epochs_take_every_minority_image_and_as_many_fresh_of_each_other_class():
    from trainables.gan.config import GanConfig

    ids = torch.arange(50, dtype=torch.float32)
    images = ids.view(50, 1, 1, 1).expand(50, 1, 4, 4).contiguous()
    labels = torch.tensor([0] * 40 + [1] * 10)
    batches = array_batches(images, 5, seed=3, labels=labels, balanced=True)
    seen = []
    for epoch in (0, 1):
        got = list(batches(epoch))
        assert len(got) == 4 and all(x.shape[0] == 5 for x, _ in got)  # 10 + 10 images, not 50
        x = torch.cat([b[0][:, 0, 0, 0] for b in got])
        y = torch.cat([b[1] for b in got])
        assert (y == 1).sum() == 10 and (y == 0).sum() == 10
        assert sorted(x[y == 1].tolist()) == list(range(40, 50))  # every minority image, once
        assert ((x[y == 0] < 40).all() and len(set(x[y == 0].tolist())) == 10)  # 10 distinct majority images
        assert torch.equal(x, torch.cat([b[0][:, 0, 0, 0] for b in batches(epoch)]))  # seeded: same epoch, same draw
        seen.append(set(x[y == 0].tolist()))
    assert seen[0] != seen[1]  # the majority draw is fresh each epoch
    # two ranks split one epoch's draw without overlap
    ranks = [torch.cat([b[0][:, 0, 0, 0] for b in array_batches(images, 5, 3, rank=r, world_size=2, labels=labels,
                                                                 balanced=True)(0)]) for r in (0, 1)]
    assert not set(ranks[0].tolist()) & set(ranks[1].tolist()) and len(ranks[0]) + len(ranks[1]) == 20
    with pytest.raises(DataError, match="class labels"):
        array_batches(images, 5, 0, balanced=True)
    with pytest.raises(ConfigError, match="conditional=True"):
        GanConfig(balanced_epochs=True)


def test_balanced_conditional_gan_trains_k_times_the_minority_per_epoch(demo32, tmp_path, one_thread, monkeypatch):
    import trainables.gan.run as gan_run
    from trainables.gan.ray_train import run_gan_ray
    from trainables.gan.run import run_gan_local

    seen: list = []

    def counting(*args, **kw):  # the real array_batches, recording the labels of every batch trained on
        inner = array_batches(*args, **kw)
        return lambda epoch: (seen.append(b[1]) or b for b in inner(epoch))

    monkeypatch.setattr(gan_run, "array_batches", counting)
    cfg = {"conditional": True, "balanced_epochs": True, "image_size": 32, "ngf": 8, "ndf": 8, "latent_dim": 16,
           "batch_size": 4, "num_epochs": 1, "checkpoint_every": 1000, "sample_every": 0, "device": "cpu"}
    res = run_gan_local(demo32, tmp_path / "bal", cfg, report=lambda r: None)
    train = read_manifest(demo32).split("train").query("~is_synthetic")
    n_min = int((train["label"] == 1).sum())
    y = torch.cat(seen)
    assert res["status"] == "finished" and len(train) > 2 * n_min
    assert len(y) == (2 * n_min) // 4 * 4 and abs(int((y == 1).sum()) - n_min) <= 4  # K x minority, not all
    with pytest.raises(ConfigError, match="single-process path"):
        run_gan_ray(demo32, tmp_path / "bal_ray", cfg, num_workers=2)


def test_sweep_gives_conditional_gans_balanced_epochs_on_the_single_process_path():
    import dataclasses

    from sweeps.config import SweepConfig
    from sweeps.trial import gan_config

    s = SweepConfig(gan_epochs=10, gan_batch_size=8, gan_width=8, image_size=32, channels=3, gan_eval_every=0,
                    workers_per_trial=1)
    trial = {"gan_loss": "bce", "gan_lr_g": 2e-4, "gan_lr_d": 2e-4, "seed": 0}
    assert gan_config({**trial, "conditional": True}, s, "cpu").balanced_epochs is True
    assert gan_config({**trial, "conditional": False}, s, "cpu").balanced_epochs is False
    two = dataclasses.replace(s, workers_per_trial=2)
    assert gan_config({**trial, "conditional": True}, two, "cpu").balanced_epochs is False


def _save_trainer_checkpoint(cfg, meta, path):
    trainer = GanTrainer(cfg, "cpu", meta=meta)
    torch.save(trainer.state_dict(), path)
    return path


def test_sampling_a_class_the_generator_was_not_trained_on_is_an_error(tmp_path, capsys):
    cfg = GanConfig(conditional=True, classes=(1, 2), image_size=32, channels=3, ngf=8, ndf=8, latent_dim=8,
                    device="cpu")
    meta = {"label": 1, "label_name": "crack", "conditional": True, "trained_labels": [1, 2],
            "trained_label_names": ["crack", "scratch"]}
    ckpt = _save_trainer_checkpoint(cfg, meta, tmp_path / "cond.pt")
    with pytest.raises(ConfigError, match=r"cannot sample class 'good'.*trained on \['crack', 'scratch'\]"):
        write_samples(ckpt, 2, tmp_path / "x", device="cpu", progress=False, labels=["crack", "good"])
    assert not list((tmp_path / "x").glob("*.png"))  # checked before anything is written
    assert generate_images(ckpt, 2, label="scratch").shape == (2, 32, 32, 3)
    assert sample_main(["--checkpoint", str(ckpt), "--num-samples", "2", "--output-dir", str(tmp_path / "y"),
                        "--label", "good", "--device", "cpu", "--no-progress"]) == 2
    assert "cannot sample class 'good'" in capsys.readouterr().err
    assert sample_main(["--checkpoint", str(ckpt), "--num-samples", "2", "--output-dir", str(tmp_path / "y"),
                        "--label", "scratch,crack", "--device", "cpu", "--no-progress"]) == 0
    assert sorted(p.name[:-11] for p in (tmp_path / "y").glob("*.png")) == ["synthetic_crack"] * 2 + ["synthetic_scratch"] * 2
    # an unconditional generator knows exactly one class
    plain = _save_trainer_checkpoint(GanConfig(image_size=32, channels=3, ngf=8, ndf=8, latent_dim=8, device="cpu"),
                                     {"label": 1, "label_name": "malignant"}, tmp_path / "plain.pt")
    with pytest.raises(ConfigError, match=r"unconditional generator .* trained on \['malignant'\]"):
        write_samples(plain, 2, tmp_path / "z", device="cpu", progress=False, labels=["benign"])


def test_checkpoints_record_conditioning_for_architecture_checks():
    cond = GanConfig(conditional=True, classes=(0, 1), image_size=32, channels=3)
    saved = {**{k: getattr(cond, k) for k in ("image_size", "channels", "latent_dim", "ngf", "ndf", "loss")},
             "conditional": True, "classes": [0, 1]}
    check_same_architecture(saved, cond, "ckpt")
    with pytest.raises(ConfigError, match=r"classes: checkpoint has \[0, 1\], config asks for \[0, 2\]"):
        check_same_architecture(saved, GanConfig(conditional=True, classes=(0, 2), image_size=32, channels=3), "ckpt")
    old = {k: v for k, v in saved.items() if k not in ("conditional", "classes")}  # before issue 9
    check_same_architecture(old, GanConfig(image_size=32, channels=3), "old ckpt")
    with pytest.raises(ConfigError, match="conditional"):
        check_same_architecture(old, cond, "old ckpt")
    with pytest.raises(ConfigError, match="unconditional GAN learns one class"):
        gan_config_from_dict({"classes": [0, 1]})


def test_conditional_networks_and_projection():
    G, D = Generator(32, 3, 8, 8, num_classes=3), Discriminator(32, 3, 8, "spectral", num_classes=3)
    z, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    x = G(z, y)
    assert x.shape == (6, 3, 32, 32)
    assert not torch.allclose(G.eval()(z, torch.zeros_like(y)), G(z, torch.ones_like(y)))  # the label matters
    score, feats = D(x, y, return_features=True)
    assert score.shape == (6,) and feats.shape == (6, D.feature_dim)
    assert not torch.allclose(D(x, torch.zeros_like(y)), D(x, torch.ones_like(y)))
    with pytest.raises(ConfigError, match="needs class indices"):
        G(z)
    # unconditional networks are unchanged: same state_dict keys as before
    assert not any("embed" in k for k in Discriminator(32, 3, 8).state_dict())


# ---- feature matching -------------------------------------------------------------------------------------------
def test_feature_matching_zero_for_identical_batches_positive_otherwise():
    torch.manual_seed(0)
    D = Discriminator(32, 3, 8, "batch").eval()
    real, fake = torch.rand(8, 3, 32, 32) * 2 - 1, (torch.rand(8, 3, 32, 32) * 2 - 1).requires_grad_(True)
    assert feature_matching_loss(D.features(real), D.features(real.clone())).item() == 0.0
    loss = feature_matching_loss(D.features(real), D.features(fake))
    assert loss.item() > 0
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    # the same batch shuffled has the same mean features: matching is of statistics, not pairs
    assert feature_matching_loss(D.features(real), D.features(real[torch.randperm(8)])).item() < 1e-10


@pytest.mark.parametrize("loss", ["bce", "hinge", "wgan-gp"])
def test_feature_matching_is_added_to_any_base_loss(loss, one_thread):
    images = torch.rand(16, 3, 32, 32) * 2 - 1
    cfg = GanConfig(loss=loss, image_size=32, channels=3, ngf=8, ndf=8, latent_dim=8, batch_size=8, num_epochs=1,
                    device="cpu", feature_matching=1.0, collapse_loss_d=0)
    hist = []
    out = train_gan(cfg, array_batches(images, 8, 0), hist.append)
    assert out["status"] == "finished" and hist[0]["loss_G_fm"] > 0
    assert "loss_G_fm" not in train_gan(GanConfig(**{**cfg.__dict__, "feature_matching": 0.0}),
                                        array_batches(images, 8, 0), lambda r: None)


# ---- perceptual loss --------------------------------------------------------------------------------------------
SMALL = (4, 8, 8)


def test_vgg_layout_matches_torchvision_vgg16():
    from torchvision.models.vgg import cfgs, make_layers

    ours, theirs = vgg16_features().state_dict(), make_layers(cfgs["D"])[:16].state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_perceptual_loss_wiring_and_gradients():
    torch.manual_seed(0)
    perc = PerceptualLoss(vgg16_features(SMALL))
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    maps = perc.extract(real)
    assert [tuple(f.shape[1:]) for f in maps] == [(4, 32, 32), (8, 16, 16), (8, 8, 8)]  # relu1_2, relu2_2, relu3_3
    assert all((f >= 0).all() for f in maps)  # taken after the ReLUs
    assert perc(real, real.clone()).item() == 0.0
    G = Generator(32, 3, 8, 8)
    loss = perc(real, G(torch.randn(4, 8)))
    assert loss.item() > 0
    loss.backward()
    assert all(p.grad is not None for p in G.parameters()) and G.net[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in perc.parameters())  # VGG stays frozen
    gray = torch.rand(4, 1, 32, 32) * 2 - 1  # grayscale: repeated to 3 channels
    assert perc(gray, gray.flip(0)).item() < 1e-10 and perc(gray, -gray).item() > 0


def test_perceptual_term_in_the_training_loop(one_thread):
    cfg = GanConfig(image_size=32, channels=1, ngf=8, ndf=8, latent_dim=8, batch_size=8, num_epochs=1, device="cpu",
                    perceptual=1.0, vgg_weights="unused-small-test-net", feature_matching=0.5, collapse_loss_d=0)
    trainer = GanTrainer(cfg, "cpu", vgg=vgg16_features(SMALL))
    hist = []
    out = train_gan(cfg, array_batches(torch.rand(16, 1, 32, 32) * 2 - 1, 8, 0), hist.append, trainer=trainer)
    assert out["status"] == "finished" and hist[0]["loss_G_perceptual"] > 0 and hist[0]["loss_G_fm"] > 0
    assert not any(k.startswith("features") for k in trainer.state_dict()["G"])  # VGG is not checkpointed


def test_vgg_weights_missing_or_wrong_shape_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"(?s)needs local VGG16 weights.*vgg16\(weights='IMAGENET1K_V1'\)"):
        GanConfig(perceptual=0.1)
    with pytest.raises(ConfigError, match=r"(?s)not found: .*nope.pth.*--vgg-weights"):
        load_vgg16_features(tmp_path / "nope.pth")
    with pytest.raises(ConfigError, match="not found"):
        GanTrainer(GanConfig(image_size=32, channels=3, ngf=8, ndf=8, device="cpu", perceptual=1.0,
                             vgg_weights=str(tmp_path / "nope.pth")), "cpu")
    small = {f"features.{k}": v for k, v in vgg16_features(SMALL).state_dict().items()}
    torch.save(small, tmp_path / "small.pth")
    with pytest.raises(ConfigError, match=r"wrong shape - features.0.weight: file \(4, 3, 3, 3\), VGG16 \(64, 3, 3, 3\)"):
        load_vgg16_features(tmp_path / "small.pth")
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(ConfigError, match=r"missing \['features.0.bias'"):
        load_vgg16_features(tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="not a loadable VGG16 state_dict"):
        load_vgg16_features(tmp_path / "junk.pth")
    # a full torchvision-style state_dict (features.* + classifier.*) loads
    full = {f"features.{k}": v for k, v in vgg16_features().state_dict().items()}
    full["classifier.6.bias"] = torch.zeros(1000)
    torch.save(full, tmp_path / "vgg16.pth")
    net = load_vgg16_features(tmp_path / "vgg16.pth")
    assert torch.equal(net[14].bias, full["features.14.bias"])


# ---- CLI ---------------------------------------------------------------------------------------------------------
def test_gan_cli_conditional_smoke_with_feature_matching(demo32, tmp_path, capsys, one_thread):
    from trainables.gan.__main__ import main as gan_main

    assert gan_main(["--manifest", str(demo32), "--out", str(tmp_path / "run"), "--smoke-test", "--conditional",
                     "--classes", "benign,malignant", "--feature-matching", "0.5", "--epochs", "1",
                     "--balanced-epochs"]) == 0
    cfg = __import__("json").loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["conditional"] is True and cfg["classes"] == [0, 1] and cfg["feature_matching"] == 0.5
    assert cfg["balanced_epochs"] is True
    assert cfg["_run"]["trained_label_names"] == ["benign", "malignant"]
    assert gan_main(["--manifest", str(demo32), "--out", str(tmp_path / "bad"), "--smoke-test", "--classes", "cat"]) == 2
    assert "unknown class 'cat'" in capsys.readouterr().err
    assert gan_main(["--manifest", str(demo32), "--out", str(tmp_path / "bad"), "--smoke-test", "--perceptual", "1"]) == 2
    assert "IMAGENET1K_V1" in capsys.readouterr().err
    assert gan_main(["--manifest", str(demo32), "--out", str(tmp_path / "bad"), "--smoke-test", "--balanced-epochs"]) == 2
    assert "set conditional=True" in capsys.readouterr().err
