"""Class labels from the user's data, and class-conditional models through every command:
train -> checkpoint -> resume (exactly) -> sample --class -> eval -> convert (weights only,
state dict, ONNX with a label input)."""

import dataclasses
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_contract import _has, tiny, trains_and_resumes_exactly

from imagegen.common.errors import UserError
from imagegen.data import datasets as data
from imagegen.data import labels
from imagegen.models.registry import MODELS
from imagegen.sampling.generation import class_grid, proportional_labels
from imagegen.storage import checkpoint

COLOURS = {"blue": (30, 30, 220), "green": (30, 200, 30), "red": (220, 30, 30)}
CONDITIONAL = [
    name for name, spec in MODELS.items() if "num_classes" in spec.config_cls.__dataclass_fields__
]


def class_folder(root: Path, per_class: int = 16, size: int = 32) -> Path:
    """A folder of class subfolders: squares of each class's colour at random places."""
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("RGB", (size, size), (0, 0, 0))
            x, y = rng.integers(0, size // 2, 2)
            image.paste(rgb, (int(x), int(y), int(x) + size // 2, int(y) + size // 2))
            image.save(root / name / f"{i:03d}.png")
    return root


# --- labels from file names ------------------------------------------------------------


def test_class_subfolders_are_the_classes_sorted_stepping_into_shared_folders() -> None:
    layout = labels.from_paths(["train/dog/1.jpg", "train/cat/2.jpg", "train/dog/3.jpg"])
    assert layout.labels is not None and layout.labels.classes == ("cat", "dog")
    assert layout.labels.of.tolist() == [1, 0, 1] and layout.labels.counts() == [1, 2]
    assert labels.from_paths(["cat/a/1.png", "dog/b/2.png"]).labels.classes == ("cat", "dog")


def test_loose_images_beside_class_folders_are_named_as_the_ambiguity() -> None:
    layout = labels.from_paths(["cat/1.png", "dog/2.png", "stray.png"])
    assert layout.labels is None and "stray.png" in layout.problem and "loose" in layout.problem
    flat = labels.from_paths(["a.png", "b.png"])
    assert flat.labels is None and "not in class subfolders" in flat.problem
    one = labels.from_paths(["pets/a.png", "pets/b.png"])  # one folder holding all: no classes
    assert one.labels is None


def test_dataset_json_labels_and_its_mistakes() -> None:
    names = ["a.png", "sub/b.png", "c.png"]
    text = json.dumps({"labels": [["a.png", 3], ["sub/b.png", 0], ["c.png", 3]]}).encode()
    layout = labels.from_dataset_json(text, names, "dataset.json")
    assert layout.labels.classes == ("0", "3") and layout.labels.of.tolist() == [1, 0, 1]
    missing = labels.from_dataset_json(json.dumps({"labels": [["a.png", 1]]}).encode(), names, "x")
    assert missing.labels is None and "2 image(s) have no label" in missing.problem
    assert labels.from_dataset_json(b'{"labels": null}', names, "x").labels is None
    with pytest.raises(UserError, match=r"not a dataset\.json"):
        labels.from_dataset_json(b'{"labels": [["a.png"]]}', names, "x")


def test_labels_follow_the_images_through_unreadable_files_and_the_cache(isolated: Path) -> None:
    folder = class_folder(isolated / "pets", per_class=4)
    (folder / "green" / "000.png").write_bytes(b"not a png")  # skipped: its label goes too
    for _ in range(2):  # decoded, then from the cache
        images = data.load_images(str(folder), resolution=32)
        assert images.skipped == 1 and images.labels.counts() == [4, 3, 4]
        means = images.images.float().mean(dim=(2, 3))  # (N, 3): each class's colour dominates
        for k in range(3):
            assert (means[images.labels.of == k].argmax(1) == [2, 1, 0][k]).all()
    assert images.cache_file is not None


def test_a_zip_of_class_folders_and_a_zips_dataset_json(isolated: Path) -> None:
    folder = class_folder(isolated / "pets", per_class=2)
    path = isolated / "pets.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(folder.rglob("*.png")):
            zf.write(file, f"train/{file.relative_to(folder).as_posix()}")
    images = data.load_images(str(path), resolution=32)
    assert images.labels.classes == ("blue", "green", "red") and images.labels.counts() == [2] * 3
    with zipfile.ZipFile(path, "a") as zf:  # a dataset.json overrides the folders
        listing = [[n, i % 2] for i, n in enumerate(sorted(zf.namelist()))]
        zf.writestr("dataset.json", json.dumps({"labels": listing}))
    assert data.load_images(str(path), resolution=32).labels.counts() == [3, 3]


def _idx(path: Path, magic: int, dims: tuple[int, ...], values: np.ndarray) -> None:
    path.write_bytes(struct.pack(">I" + "I" * len(dims), magic, *dims) + values.tobytes())


def test_named_datasets_have_their_labels(isolated: Path) -> None:
    raw = isolated / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    _idx(raw / "train-images-idx3-ubyte", 0x803, (3, 28, 28), np.zeros((3, 28, 28), np.uint8))
    _idx(raw / "train-labels-idx1-ubyte", 0x801, (3,), np.array([9, 0, 9], np.uint8))
    images = data.load_images("fashion-mnist", resolution=32, root=isolated / "root")
    assert images.labels.of.tolist() == [9, 0, 9] and images.labels.classes[9] == "ankle-boot"


def test_class_grids_and_proportional_labels() -> None:
    grid, per_row = class_grid(64, 10)
    assert per_row == 6 and grid.tolist() == [k for k in range(10) for _ in range(6)]
    assert class_grid(4, 10)[0].tolist() == [0, 1, 2, 3]
    drawn = proportional_labels(10, [1, 1, 2])
    assert torch.bincount(drawn).tolist() == [3, 2, 5]  # a tie goes to the first class
    assert torch.bincount(proportional_labels(1000, [50, 30, 20])).tolist() == [500, 300, 200]
    # Every prefix is a fair sample (eval's fid_at takes the first k): not class after class.
    drawn = proportional_labels(5000, [500] * 10)
    assert torch.bincount(drawn[:2000], minlength=10).tolist() == [200] * 10
    prefix = torch.bincount(proportional_labels(1000, [50, 30, 20])[:100], minlength=3)
    assert (prefix - torch.tensor([50, 30, 20])).abs().max() <= 1
    assert len(proportional_labels(0, [1, 2])) == 0


# --- the conditional models ---------------------------------------------------------------


@pytest.mark.parametrize("name", CONDITIONAL)
def test_the_class_changes_the_image_and_the_discriminators_verdict(name: str) -> None:
    spec = MODELS[name]
    config = spec.config_cls(resolution=32, num_classes=3, **_small(spec))
    model = spec.model_cls(config).eval()
    z = torch.randn(4, config.latent_dim).repeat(3, 1)
    y = torch.arange(3).repeat_interleave(4)
    images = model.generate(z, labels=y)
    assert not torch.allclose(images[:4], images[4:8])
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    x = images[:4] * 2 - 1
    if hasattr(model, "discriminator"):  # the projection
        assert not torch.allclose(model.discriminator(x, zeros), model.discriminator(x, ones))
    if spec.model_cls.can_reconstruct:  # q(z|x,y)
        encoder = model.autoencoder.encoder
        assert not torch.allclose(encoder(x, zeros)[0], encoder(x, ones)[0])
        assert not torch.allclose(
            model.reconstruct(x, labels=zeros), model.reconstruct(x, labels=ones)
        )
    with pytest.raises(ValueError, match="needs labels"):
        model.generate(z)


def _small(spec) -> dict:
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    return {k: v for k, v in {"g_width": 8, "d_width": 8, "latent_dim": 8}.items() if k in fields}


@pytest.mark.parametrize("name", CONDITIONAL)
def test_conditional_model_through_every_command(
    name: str, run_cli, isolated: Path, weights
) -> None:
    folder = class_folder(isolated / "pets")
    base = ["train", name, "-d", folder, "--conditional", "--batch-size", "8", "-q"]
    straight = trains_and_resumes_exactly(run_cli, name, base, isolated)

    config = json.loads((straight / "config.json").read_text())
    assert config["classes"] == {"blue": 16, "green": 16, "red": 16}
    assert config["train_config"]["conditional"] and config["model_config"]["num_classes"] == 3
    ckpt = checkpoint.read_checkpoint(straight / "checkpoints/latest.safetensors")
    assert ckpt.class_names == ["blue", "green", "red"]
    grid = Image.open(sorted((straight / "samples").glob("step-*.png"))[-1])
    assert grid.size[1] == 3 * 32 + 4 * 2  # one row per class (64 // 3 = 21 images each)

    result = run_cli("sample", straight, "--class", "green", "-n", "4", "--out", "g.png", "--json")
    assert result.code == 0 and json.loads(result.out)["class"] == "green", result
    result = run_cli("sample", straight, "--class", "2", "-n", "3", "--individual", "each")
    assert (
        result.code == 0 and sorted(p.name for p in Path("each").iterdir())[0] == "000000-red.png"
    )
    result = run_cli("sample", straight, "--seeds", "0-1", "--individual", "bys")  # every class
    assert result.code == 0 and len(list(Path("bys").glob("seed000[01]-*.png"))) == 6, result
    assert Path("bys/seed0001-green.png").is_file()
    result = run_cli("sample", straight, "--seeds", "0-1400", "--out", "big.png")  # 3 x 1,401
    assert result.code == 2 and "grid of 4203 is too large" in result.err, result
    assert not Path("big.png").exists()
    result = run_cli("sample", straight, "--class", "cat", "-n", "4", "--out", "c.png")
    assert (
        result.code == 2 and "valid: blue, green, red" in result.err and not Path("c.png").exists()
    )
    result = run_cli("eval", straight, "-n", "30", "--metrics", "fid", "--json", "-q")
    assert result.code == 0 and json.loads(result.out)["metrics"]["fid"] > 0, result
    measured = json.loads(result.out)  # a conditional model's FID brings the intra-class FID
    assert {"intra_fid", "intra_fid/blue", "intra_fid/red"} <= measured["metrics"].keys()
    assert measured["protocol"]["intra_fid"]["samples_per_class"] == [10, 10, 10]
    if MODELS[name].model_cls.can_reconstruct:  # each image encoded with its own class
        result = run_cli("sample", straight, "--reconstruct", "-n", "4", "--out", "r.png")
        assert result.code == 0, result
    if MODELS[name].model_cls.has_likelihood:
        result = run_cli("eval", straight, "--metrics", "bpd", "--test-data", folder, "--json")
        assert result.code == 0 and json.loads(result.out)["metrics"]["test_bpd"] > 0, result
        flat = isolated / "flat"
        flat.mkdir()
        for file in sorted(folder.rglob("*.png"))[:4]:
            (flat / file.name).write_bytes(file.read_bytes())
        result = run_cli("eval", straight, "--metrics", "bpd", "--test-data", flat)
        assert result.code == 1 and "not in class subfolders" in result.err, result

    model = checkpoint.build_model(ckpt)
    z, y = torch.randn(3, 8), torch.tensor([2, 0, 1])
    assert run_cli("convert", straight, "small.safetensors", "--weights-only").code == 0
    small = checkpoint.read_checkpoint(Path("small.safetensors"))
    assert small.class_names == ckpt.class_names
    assert torch.equal(
        model.generate(z, labels=y), checkpoint.build_model(small).generate(z, labels=y)
    )
    assert run_cli("convert", straight, "m.pt").code == 0
    assert json.loads(Path("config.json").read_text())["classes"] == ["blue", "green", "red"]
    if _has("onnxruntime"):
        result = run_cli("convert", straight, "m.onnx", "--json", "-q")
        assert result.code == 0, result
        assert json.loads(result.out)["check"]["onnxruntime_max_abs_diff"] < 1e-4
        import onnx

        props = {p.key: p.value for p in onnx.load("m.onnx").metadata_props}
        assert json.loads(props["classes"]) == ["blue", "green", "red"]


def test_the_first_line_says_what_the_classes_are_and_refusals_are_one_line(
    run_cli, isolated: Path
) -> None:
    folder = class_folder(isolated / "pets", per_class=8)
    base = ["train", "dcgan", "--batch-size", "8", "--steps", "1", *tiny("dcgan")]
    result = run_cli(*base, "-d", folder, "--run-dir", "plain")
    assert result.code == 0, result
    assert "3 classes (class subfolders): blue 8, green 8, red 8; not used: --conditional" in (
        result.out + result.err
    )
    assert "classes" not in json.loads(load_meta(Path("plain")))  # unconditional: none kept
    result = run_cli("sample", "plain", "--class", "red", "-n", "2", "--out", "x.png")
    assert result.code == 2 and "not conditional" in result.err

    for data_arg, why in [("synthetic", "synthetic set has no classes")]:
        result = run_cli(*base, "-d", data_arg, "--conditional", "--run-dir", "r1")
        assert result.code == 2 and why in result.err and not Path("r1").exists(), result
    Image.new("RGB", (32, 32)).save(folder / "stray.png")
    result = run_cli(*base, "-d", folder, "--conditional", "--run-dir", "r2")
    assert result.code == 2 and "stray.png" in result.err and len(result.err.splitlines()) == 1
    result = run_cli(*base, "-d", folder, "--set", "num_classes=3", "--run-dir", "r4")
    assert result.code == 2 and "--conditional" in result.err


def load_meta(run: Path) -> str:
    """The metadata of a run's latest checkpoint, as JSON text."""
    return json.dumps(
        checkpoint.read_header(run / "checkpoints/latest.safetensors")["__metadata__"]
    )


@pytest.mark.integration
def test_mnist_labels_are_mnists(mnist_root: Path) -> None:
    images = data.load_images("mnist", resolution=32, root=mnist_root, split="test")
    assert images.labels.counts() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_each_training_image_comes_with_its_own_class(
    run_cli, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_cls = MODELS["dcgan"].model_cls
    original, seen = model_cls.training_step, []

    def spy(self, real, optimizers, noise, labels=None):
        seen.append((real.detach().clone(), labels.clone()))
        return original(self, real, optimizers, noise, labels=labels)

    monkeypatch.setattr(model_cls, "training_step", spy)
    folder = class_folder(isolated / "pets", per_class=8)
    args = ["train", "dcgan", "-d", folder, "--conditional", "--batch-size", "8", "-q"]
    assert run_cli(*args, "--steps", "5", "--flip", *tiny("dcgan")).code == 0
    for real, classes in seen:  # blue, green, red: the class's colour channel dominates
        assert torch.equal(real.mean(dim=(2, 3)).argmax(1), 2 - classes)
    assert len({tuple(classes.tolist()) for _, classes in seen}) > 1


@pytest.mark.integration
@pytest.mark.parametrize("name", CONDITIONAL)
def test_conditional_torchrun_job_keeps_its_ranks_in_sync(name: str, isolated: Path) -> None:
    from test_distributed import _meta, _ok, torchrun

    from imagegen.training import distributed

    folder = class_folder(isolated / "pets")
    run = isolated / "run"
    args = ["train", name, "-d", folder, "--conditional", "--batch-size", "8", *tiny(name)]
    result = _ok(torchrun(*args, "--steps", "6", "--run-dir", run, "--json", "-q"))
    assert result["world_size"] == 2 and result["step"] == 6
    latest = run / "checkpoints" / "latest.safetensors"
    digests = json.loads(_meta(latest)["counters"])["rank_weights_sha256"]
    ckpt = checkpoint.read_checkpoint(latest)
    assert digests == [distributed.weights_digest(checkpoint.build_model(ckpt, use_ema=False))] * 2
    assert ckpt.class_names == ["blue", "green", "red"]


def test_intra_class_fid_sees_samples_of_the_wrong_class() -> None:
    """Samples that are the right images under the wrong labels: the overall FID cannot tell,
    the intra-class FID can."""
    from imagegen.evaluation import registry as eval_metrics

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g) * 4
    real_labels = torch.arange(3).repeat_interleave(200)
    real = centres[real_labels] + torch.randn(600, 16, generator=g)
    fake = centres[real_labels] + torch.randn(600, 16, generator=g)  # (600, 16)

    def measure(fake_labels: torch.Tensor) -> dict[str, float]:
        inputs = eval_metrics.Inputs(eval_metrics.Settings(), ("fid", "intra_fid"))
        inputs.real, inputs.fake = real, fake
        inputs.classes, inputs.real_labels, inputs.fake_labels = (
            ["a", "b", "c"],
            real_labels,
            fake_labels,
        )
        return eval_metrics.compute(inputs)

    right, wrong = measure(real_labels), measure((real_labels + 1) % 3)
    assert right["fid"] == wrong["fid"] and right["intra_fid"] < 1.0
    assert wrong["intra_fid"] > 50 * right["intra_fid"] and wrong["intra_fid/a"] > 10


@pytest.mark.integration
def test_the_readmes_class_folder_example(run_cli, isolated: Path, mnist_root: Path) -> None:
    """`make demo-classes`, small: Fashion-MNIST written as a folder of class subfolders, a
    conditional DCGAN trained on it, and sneakers sampled by name."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "class_folder", Path(__file__).resolve().parents[1] / "docs" / "class_folder.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not (mnist_root / "FashionMNIST" / "raw").is_dir():
        pytest.skip("Fashion-MNIST is not in the data root")
    folder = isolated / "fashion-folder"
    assert module.write_folder("fashion-mnist", folder, 10, mnist_root) == 100
    assert len(list((folder / "sneaker").glob("*.png"))) == 10
    args = ["train", "dcgan", "--dataset", folder, "--conditional", "--steps", "3", *tiny("dcgan")]
    result = run_cli(*args, "--run-dir", "demo-classes")
    assert result.code == 0, result
    assert "conditional on 10 classes (class subfolders): ankle-boot 10, bag 10" in result.err
    result = run_cli("sample", "demo-classes", "--class", "sneaker", "--n", "16", "--json")
    assert result.code == 0 and json.loads(result.out)["class"] == "sneaker", result


def test_the_conditioning_ramps_in_transitional_training(run_cli, isolated: Path) -> None:
    """cond_start/cond_end: at weight 0 the DCGAN is unconditional (every class the same image
    and verdict), at 1 the conditional model it would be without the ramp; the weight follows
    the D steps through training, a resumed run mid-ramp ends with the same bits, and the
    first line says so."""
    from imagegen.models.dcgan import DCGAN, DCGANConfig

    small = {"resolution": 32, "num_classes": 3, "g_width": 8, "d_width": 8, "latent_dim": 8}
    ramped = DCGAN(DCGANConfig(**small, cond_start=2, cond_end=6)).eval()
    assert [ramped.conditioning_weight(i) for i in (0, 2, 3, 5, 6, 9)] == [0, 0, 0.25, 0.75, 1, 1]
    z, y = torch.randn(3, 8), torch.tensor([0, 1, 2])
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    images = ramped.generate(z[:1].repeat(3, 1), labels=y)
    assert torch.equal(images[0], images[1]) and torch.equal(images[0], images[2])
    verdicts = ramped.discriminator(x[:1].repeat(3, 1, 1, 1), y)
    assert torch.equal(verdicts[0], verdicts[1])
    plain = DCGAN(DCGANConfig(**small)).eval()
    plain.load_state_dict(
        {k: v for k, v in ramped.state_dict().items() if "cond_weight" not in k and "d_st" not in k}
    )
    ramped._set_cond_weight(6)
    assert torch.allclose(ramped.generate(z, labels=y), plain.generate(z, labels=y), atol=1e-6)
    assert torch.allclose(ramped.discriminator(x, y), plain.discriminator(x, y), atol=1e-5)

    folder = class_folder(isolated / "pets", per_class=8)
    ramp = ["--set", "cond_start=1", "--set", "cond_end=5"]
    base = ["train", "dcgan", "-d", folder, "--conditional", "--batch-size", "8", *ramp]
    straight = trains_and_resumes_exactly(run_cli, "dcgan", base, isolated)
    state = load_file(str(straight / "checkpoints/latest.safetensors"))
    assert state["model/generator.cond_weight"].item() == 1.0  # D step 5 of 0..5
    mid = load_file(str(straight / "checkpoints/step-0000003.safetensors"))
    assert mid["model/discriminator.cond_weight"].item() == 0.25  # D step 2
    result = run_cli(*base, "--steps", "1", *tiny("dcgan"), "--run-dir", "first")
    assert "the conditioning ramps in from D step 1 to 5" in result.out + result.err, result
    result = run_cli("train", "dcgan", "-d", folder, *ramp, "--steps", "1", "--run-dir", "u")
    assert result.code == 2 and "train --conditional" in result.err, result


def test_a_conditional_dcgan_ramps_in_over_its_runs_length_unless_told(
    run_cli, isolated: Path
) -> None:
    """Without cond_start/cond_end, a conditional DCGAN ramps its conditioning in from 1/12 to
    1/3 of its planned steps (what MNIST measured); cond_end=0 trains it conditional from the
    start; the steps are fixed when the run starts, so a resumed, extended run keeps them."""
    folder = class_folder(isolated / "pets", per_class=8)
    base = ["train", "dcgan", "-d", folder, "--conditional", "--batch-size", "8", *tiny("dcgan")]
    dry = run_cli(*base, "--steps", "24", "--dry-run", "--json")
    assert dry.code == 0 and json.loads(dry.out)["conditional_ramp"] == [1 / 12, 1 / 3], dry
    planned = json.loads(dry.out)["model_config"]  # the dry run shows the steps that train
    assert (planned["cond_start"], planned["cond_end"]) == (2, 8), planned
    # --epochs too: 24 images in batches of 8 are 3 steps an epoch; 8 epochs are 24 steps.
    dry = run_cli(*base, "--epochs", "8", "--dry-run", "--json")
    assert json.loads(dry.out)["total_steps"] == 24, dry
    planned = json.loads(dry.out)["model_config"]
    assert (planned["cond_start"], planned["cond_end"]) == (2, 8), planned
    result = run_cli(*base, "--steps", "24", "--run-dir", "ramped")
    assert "the conditioning ramps in from D step 2 to 8" in result.out + result.err, result
    config = json.loads((isolated / "ramped/config.json").read_text())["model_config"]
    assert (config["cond_start"], config["cond_end"]) == (2, 8)
    result = run_cli("train", "dcgan", "--resume", "ramped", "--steps", "30")
    assert result.code == 0, result
    config = json.loads((isolated / "ramped/config.json").read_text())["model_config"]
    assert (config["cond_start"], config["cond_end"]) == (2, 8)
    result = run_cli(*base, "--steps", "24", "--set", "cond_end=0", "--run-dir", "plain")
    assert result.code == 0 and "ramps in" not in result.out + result.err, result
    state = load_file(str(isolated / "plain/checkpoints/latest.safetensors"))
    assert not any("cond_weight" in k for k in state)
    dry = run_cli(
        *base[:2], "--set", "cond_end=0", *base[2:], "--steps", "24", "--dry-run", "--json"
    )
    assert "conditional_ramp" not in json.loads(dry.out), dry
    dry = run_cli("train", "vae", "-d", folder, "--conditional", "--batch-size", "8", "--dry-run")
    assert dry.code == 0 and "conditional_ramp" not in dry.out, dry
