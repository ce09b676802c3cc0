"""The models imagegen knows: one literal dict from a name to its spec.

A spec names its model's file and classes; they are imported on first use, so listing the
models (in --help, say) costs no torch import.
"""

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any

from imagegen.common.errors import UsageError


@dataclass(frozen=True)
class Flattening:
    """Where a preset's FID curve was measured to flatten in a long run (docs/long-runs.md)."""

    images: int  # training images that buy most of what a longer run gives
    said: str  # the measurement in a few words: the data and the FIDs along the curve


@dataclass(frozen=True)
class Preset:
    """A named recipe: training options and model options over the defaults."""

    summary: str
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    model: dict[str, Any] = field(default_factory=dict)  # the model's config fields
    flattens: Flattening | None = None  # measured; the first line of a far longer run says it


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model: its frozen config class, its module class, its defaults.

    The config classes' defaults are the papers'; `presets` are recipes over them, and a new
    run starts from `default_preset` unless another is named. Flags override presets.
    """

    name: str
    summary: str
    module: str  # the model's file, e.g. imagegen.models.dcgan
    config_name: str  # its frozen config dataclass
    model_name: str  # its GenerativeModel
    train_defaults: dict[str, Any] = field(default_factory=dict)  # over TrainConfig's
    presets: dict[str, Preset] = field(default_factory=dict)
    default_preset: str = ""
    # `--precision auto` trains in bf16 on CPUs with native bf16 units (docs/quality.md: the
    # benchmark measured the same FID in bf16 as in fp32 for this model)
    cpu_bf16: bool = False
    # A conditional run's conditioning ramps in (transitional training) from the first to the
    # second fraction of its planned steps, set as the model options cond_start, cond_end
    # unless the run gives either; None: conditional from the start
    conditional_ramp: tuple[float, float] | None = None

    def conditioning_ramp(
        self, conditional: bool, model_options: dict[str, Any]
    ) -> tuple[float, float] | None:
        """The fractions of its planned steps over which a run's conditioning ramps in: the
        spec's, for a conditional run whose model options set neither cond_start nor cond_end."""
        if not conditional or {"cond_start", "cond_end"} & model_options.keys():
            return None
        return self.conditional_ramp

    @property
    def config_cls(self) -> type:
        return getattr(importlib.import_module(self.module), self.config_name)

    @property
    def model_cls(self) -> Any:
        return getattr(importlib.import_module(self.module), self.model_name)

    def preset(self, name: str | None) -> tuple[str, Preset]:
        """The preset `name` (the default one for None); an unknown name lists the valid."""
        name = self.default_preset if name is None else name
        if name == "" and not self.presets:
            return "", Preset(summary="the paper's defaults")
        if name not in self.presets:
            valid = ", ".join(self.presets) or "none"
            raise UsageError(f"unknown preset {name!r} for {self.name} (valid: {valid})")
        return name, self.presets[name]


# The VAE-GAN options of the authors' code (the `balanced` presets).
_AUTHORS_CODE = {"balance": True, "d_on_reconstructions": False, "beta": 4.0}
# Their learning rate's decay over the run, at Adam 4e-4 (the balanced-decay presets).
_DECAYED = {"lr": 4e-4, "lr_decay": "linear"}

# The VAE of the mixture preset: room in the latent, the likelihood by the data, and samples
# from where the encoder puts the data: chosen by measurement (docs/models.md, the VAE).
_SHARP_MIXTURE = {
    "likelihood": "auto",
    "latent_dim": 128,
    "width": 64,
    "prior": "mixture",
}

# balanced-decay's schedule at batch 16 (the VAE-GAN's small-batch and wide presets).
_DECAYED_SMALL_BATCH = _DECAYED | {"batch_size": 16}
# The DCGAN's batch 16 at Adam 4e-4 (small-batch, and the presets built on it).
_SMALL_BATCH = {"lr": 4e-4, "batch_size": 16}
# The DCGAN's adaptive augmentation (the adaptive presets).
_ADAPTIVE = {"augment": "translation,cutout", "augment_target": 0.9}

MODELS: dict[str, ModelSpec] = {
    "dcgan": ModelSpec(
        name="dcgan",
        summary="DCGAN (Radford et al. 2015), non-saturating loss",
        module="imagegen.models.dcgan",
        config_name="DCGANConfig",
        model_name="DCGAN",
        presets={
            "classic": Preset(
                summary="pytorch/examples' DCGAN: BatchNorm in D, BCE loss, Adam 2e-4 "
                "(0.5, 0.999), samples from the raw generator (no EMA)",
                train={"ema_decay": 0.0},
            ),
            "classic-ema": Preset(
                summary="the classic recipe, sampled from an EMA of the generator (0.999)",
            ),
            "bn-hinge": Preset(
                summary="the classic recipe with the hinge loss, EMA generator",
                model={"loss": "hinge"},
            ),
            "high-lr": Preset(
                summary="the classic networks and loss at twice the learning rate (Adam 4e-4 "
                "for G and D), EMA generator",
                train={"lr": 4e-4},
            ),
            "small-batch": Preset(
                summary="high-lr at batch 16: four optimizer steps for every one at batch 64 "
                "over the same images (slower per image on a GPU), EMA generator",
                train=_SMALL_BATCH,
            ),
            "augmented": Preset(
                summary="small-batch with DiffAugment (Zhao et al. 2020): translation and "
                "cutout of every image D sees, real and generated, in D's and G's steps",
                train=_SMALL_BATCH,
                model={"augment": "translation,cutout"},
            ),
            "adaptive": Preset(
                summary="augmented with ADA's adaptive strength (Karras et al. 2020): each image "
                "is augmented with a probability p that rises on steps where D is sure of the "
                "real images (E[sign D(x)] above 0.9: at batch 16, all 16 logits positive) "
                "and falls on the others",
                train=_SMALL_BATCH,
                model=_ADAPTIVE,
            ),
            "adaptive-r1": Preset(
                summary="adaptive with the R1 penalty on D's gradient at the real images "
                "(Mescheder et al. 2018), gamma 0.01 (StyleGAN2-ADA's CIFAR-10 setting)",
                train=_SMALL_BATCH,
                model=_ADAPTIVE | {"r1_gamma": 0.01},
            ),
            "adaptive-lazy-r1": Preset(
                summary="adaptive-r1 with lazy R1 (StyleGAN2): the penalty on every 16th D "
                "step at 16 times its weight, so its second backward pass is paid a sixteenth "
                "as often; the same FID as adaptive-r1 in fewer minutes (docs/models.md)",
                train=_SMALL_BATCH,
                model=_ADAPTIVE | {"r1_gamma": 0.01, "r1_every": 16},
                flattens=Flattening(
                    2_000_000,
                    "on CIFAR-10-JPEG its FID was 29.0 at 1M images, 25.6 at 2M, 23.4 at 5M",
                ),
            ),
        },
        default_preset="adaptive-lazy-r1",
        cpu_bf16=True,
        # ramped over 1/12 to 1/3 of the run: chosen by measurement (docs/models.md,
        # Class-conditional)
        conditional_ramp=(1 / 12, 1 / 3),
    ),
    "vae": ModelSpec(
        name="vae",
        summary="VAE (Kingma & Welling 2014), Bernoulli or Gaussian likelihood, beta-KL",
        module="imagegen.models.vae",
        config_name="VAEConfig",
        model_name="VAE",
        train_defaults={"lr": 1e-3, "beta1": 0.9},
        presets={
            "bernoulli": Preset(
                summary="Bernoulli likelihood on gray levels (as VAE papers report on MNIST)",
            ),
            "sigma": Preset(
                summary="Gaussian likelihood with the optimal shared sigma (the sigma-VAE)",
                model={"likelihood": "gaussian-optimal"},
            ),
            "mixture": Preset(
                summary="latent 128 and width 64, the likelihood by the data (the optimal-"
                "sigma Gaussian on colour, Bernoulli on grey levels), sampled from a "
                "10-component Gaussian mixture fitted to the encoded training images (Ghosh "
                "et al. 2020)",
                model=_SHARP_MIXTURE,
            ),
            "mixture-256": Preset(
                summary="mixture with a latent of 256: sharper reconstructions and samples on "
                "colour images, about the same on grey levels (docs/models.md)",
                model=_SHARP_MIXTURE | {"latent_dim": 256},
            ),
        },
        # mixture-256: colour images' samples and reconstructions (docs/models.md, issue 47)
        default_preset="mixture-256",
    ),
    "vaegan": ModelSpec(
        name="vaegan",
        summary="VAE-GAN (Larsen et al. 2016), feature-space reconstruction",
        module="imagegen.models.vaegan",
        config_name="VAEGANConfig",
        model_name="VAEGAN",
        presets={
            "paper": Preset(
                summary="Algorithm 1 of the paper: three losses at the same parameters, D sees "
                "reconstructions and prior samples, no balancing",
            ),
            "balanced": Preset(
                summary="the authors' code: the equilibrium rule skips D's or the decoder's "
                "step, D sees real images and prior samples; KL weight 4, so the posterior "
                "stays near the prior that samples come from",
                model=_AUTHORS_CODE,
            ),
            "balanced-high-lr": Preset(
                summary="balanced at twice the learning rate: Adam 4e-4 for the encoder, "
                "decoder and discriminator (the authors' RMSProp ran at 3e-4)",
                model=_AUTHORS_CODE,
                train={"lr": 4e-4},
            ),
            "balanced-decay": Preset(
                summary="balanced-high-lr with the learning rate decayed linearly to 0 at the "
                "run's last step (the authors decayed theirs over training)",
                model=_AUTHORS_CODE,
                train=_DECAYED,
            ),
            "small-batch": Preset(
                summary="balanced-decay at batch 16: four optimizer steps for every one at "
                "batch 64 over the same images (the DCGAN's largest single gain on "
                "CIFAR-10-JPEG; docs/models.md has the figures)",
                model=_AUTHORS_CODE,
                train=_DECAYED_SMALL_BATCH,
            ),
            "wide": Preset(
                summary="small-batch with twice the channels in the encoder, decoder and "
                "discriminator (width 64, d_width 64: the DCGAN's), about three times the "
                "time a step; the lowest FID on CIFAR-10-JPEG and MNIST (docs/models.md)",
                model=_AUTHORS_CODE | {"width": 64, "d_width": 64},
                train=_DECAYED_SMALL_BATCH,
            ),
            "reference": Preset(
                summary="balanced-decay with D's BatchNorm over real images, reconstructions "
                "and prior samples in one batch normalised with the real images' statistics "
                "(a reference batch, Salimans et al. 2016), so that D and the feature "
                "reconstruction see a contrast the generated batch shares; better on MNIST, "
                "worse on CIFAR-10-JPEG (docs/quality.md)",
                model=_AUTHORS_CODE | {"d_batch": "reference"},
                train=_DECAYED,
            ),
        },
        # wide: the lowest FID on both datasets at equal images (docs/models.md, issue 47)
        default_preset="wide",
    ),
}


def get_spec(name: str) -> ModelSpec:
    """The spec registered under `name`; an unknown name lists the valid ones."""
    try:
        return MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), MODELS, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown model {name!r} (valid: {', '.join(MODELS)}){hint}") from None


def set_by(key: str) -> tuple[dict[str, Any], list[str]]:
    """Where the registry sets training option `key` over TrainConfig's default: each model's
    own default (by model name), and the presets that set it (as MODEL/PRESET)."""
    models = {n: s.train_defaults[key] for n, s in MODELS.items() if key in s.train_defaults}
    presets = [
        f"{n}/{p}" for n, s in MODELS.items() for p, pr in s.presets.items() if key in pr.train
    ]
    return models, presets
