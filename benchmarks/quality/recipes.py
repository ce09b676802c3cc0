"""The recipes: every preset of every model as MODEL-PRESET, candidates (NAME+key=value,
NAME+conditional, NAME@bf16), and whether a recorded run still is its recipe."""

import hashlib
import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from imagegen.common.options import build_dataclass, flag_of, to_dict
from imagegen.models.registry import MODELS
from imagegen.training.config import TrainConfig
from imagegen.training.plan import preset_options
from quality.settings import BenchError

BATCH = TrainConfig.batch_size  # where a recipe's preset does not set its own


@dataclass(frozen=True)
class Recipe:
    """A model and the `imagegen train` options that make the recipe."""

    model: str
    args: tuple[str, ...]
    label: str
    batch: int  # images per step: the preset's, else TrainConfig's
    changes: tuple[tuple[str, str], ...] = ()  # model options over the preset's (a candidate)
    train_changes: tuple[tuple[str, str], ...] = ()  # and training options (RECIPE_OPTIONS)


def _recipes() -> dict[str, Recipe]:
    """Every preset of every model, named MODEL-PRESET; the default ones say so."""
    out = {}
    for spec in MODELS.values():
        for name in spec.presets:
            default = " (the default)" if name == spec.default_preset else ""
            train = spec.train_defaults | spec.presets[name].train
            out[f"{spec.name}-{name}"] = Recipe(
                spec.name,
                ("--preset", name),
                f"{spec.name} {name}{default}",
                train.get("batch_size", BATCH),
            )
    return out


RECIPES = _recipes()


FLAGS = ("conditional",)  # training flags a recipe may add: NAME+conditional


# The training options a recipe's preset may set (the rest say how long, where and how often).
# seed: a second run of a recipe (NAME+seed=1), to see one run's spread beside a difference.
RECIPE_OPTIONS = (
    "batch_size",
    "lr",
    "lr_d",
    "lr_decay",
    "lr_decay_start",
    "beta1",
    "beta2",
    "ema_decay",
    "flip",
    "seed",
)


def recipe(name: str) -> Recipe:
    """A recipe by name; `NAME@bf16` trains NAME under bf16 autocast (the precision check);
    `NAME+key=value` changes a model option of NAME's preset, or a training option of
    RECIPE_OPTIONS (`+batch_size=64`): a candidate measured beside it; `NAME+conditional` trains
    it class-conditional on the data's classes."""
    name, _, precision = name.partition("@")
    base, *changed = name.split("+")
    flags = [c for c in changed if c in FLAGS]
    every = tuple(tuple(c.split("=", 1)) for c in changed if c not in FLAGS)
    if (
        base not in RECIPES
        or precision not in ("", "bf16", "fp32")
        or any(len(c) != 2 for c in every)
    ):
        valid = ", ".join(RECIPES)
        raise BenchError(
            f"unknown recipe {name} (valid: {valid}, each optionally +key=value..., "
            f"+{', +'.join(FLAGS)} and @bf16)"
        )
    changes = tuple(c for c in every if c[0] not in RECIPE_OPTIONS)
    train_changes = tuple(c for c in every if c[0] in RECIPE_OPTIONS)
    r = RECIPES[base]
    args, label, batch = r.args, r.label, r.batch
    for key, value in changes:
        args, label = (*args, "--set", f"{key}={value}"), f"{label}, {key}={value}"
    for key, value in train_changes:  # batch_size goes in as the recipe's batch
        if key == "batch_size":
            batch = int(value)
        else:
            args = (*args, *_train_flag(key, value))
        label = f"{label}, {key}={value}"
    for flag in flags:
        args, label = (*args, f"--{flag}"), f"{label}, {flag}"
    if precision:
        args, label = (*args, "--precision", precision), f"{label}, {precision}"
    return Recipe(r.model, args, label, batch, changes, train_changes)


# Training options that change no step's compute: a candidate that changes only these trains
# at its base recipe's speed, which is its speed (its equal-time budget is the base's).
SAME_SPEED = ("lr", "lr_d", "lr_decay", "lr_decay_start", "beta1", "beta2", "seed")


def speed_recipe(name: str) -> str:
    """The recipe whose speed alone is `name`'s: its base (at its precision) where it changes
    only options of SAME_SPEED, else itself."""
    plain, at, precision = name.partition("@")
    base, *changed = plain.split("+")
    recipe(name)  # an unknown one stops here
    if changed and all(c.split("=", 1)[0] in SAME_SPEED for c in changed):
        return base + at + precision
    return name


def _train_flag(key: str, value: str) -> tuple[str, ...]:
    """`imagegen train`'s flag for a training option (as TrainConfig declares it)."""
    field = TrainConfig.__dataclass_fields__[key]
    flag = flag_of(field)
    if field.type is bool:
        return (flag if value.lower() in ("1", "true", "yes") else f"--no-{flag[2:]}",)
    return (flag, value)


def split_recipes(text: str) -> list[str]:
    """`a,b+augment=color,cutout` -> [a, b+augment=color,cutout]: a comma starts a recipe only
    before a recipe's name (an option's value may hold commas)."""
    names: list[str] = []
    for part in text.split(","):
        if names and part.split("+")[0].split("@")[0] not in RECIPES:
            names[-1] += f",{part}"
        else:
            names.append(part)
    return names


def default_recipe(model: str) -> str:
    return f"{model}-{MODELS[model].default_preset}"


def is_recipe(name: str) -> bool:
    try:
        recipe(name)
    except BenchError:
        return False
    return True


# The model options the data sets, not the recipe.
DATA_OPTIONS = ("channels", "resolution", "num_classes")


# Model options of conditional runs alone: the unconditional run beside one is without them.
CONDITIONAL_ONLY = ("cond_start", "cond_end")


def retuned(done: dict[str, Any], name: str) -> str:
    """How a recorded run's options differ from what its recipe's preset sets now ('' when
    they agree, or when the record keeps no configs: carried over). An option the record
    lacks (added since) counts as its default."""
    if "model_config" not in done:
        return ""
    spec = recipe(name)
    model = MODELS[spec.model]
    preset = {"preset": spec.args[spec.args.index("--preset") + 1]}
    # as `imagegen train` resolves them (its plan); model options as `--set` gives them: text
    asked_train, asked = preset_options(
        model, preset | dict(spec.train_changes), dict(spec.changes)
    )
    want_model = _plain(build_dataclass(model.config_cls, asked, spec.model))
    want_train = _plain(build_dataclass(TrainConfig, asked_train, "training"))
    defaults = _plain(build_dataclass(model.config_cls, {}, spec.model))
    # a conditioning ramped by the run's length: the run sets cond_start and cond_end
    by_length = model.conditioning_ramp("--conditional" in spec.args, asked) is not None
    unasked = DATA_OPTIONS + (CONDITIONAL_ONLY if by_length else ())
    diffs = [
        f"{k}: {done['model_config'].get(k, defaults[k])} -> {v}"
        for k, v in want_model.items()
        if k not in unasked and done["model_config"].get(k, defaults[k]) != v
    ]
    if by_length and not done["model_config"].get("cond_end"):
        diffs.append("cond_end: 0 -> ramped by the run's length (conditional_ramp)")
    train_defaults = _plain(TrainConfig())
    diffs += [
        f"{k}: {done['train_config'].get(k, train_defaults[k])} -> {want_train[k]}"
        for k in RECIPE_OPTIONS
        if done["train_config"].get(k, train_defaults[k]) != want_train[k]
    ]
    return ", ".join(diffs)


def _plain(config: Any) -> dict[str, Any]:
    """A config as its JSON record holds it (tuples as lists)."""
    return json.loads(json.dumps(to_dict(config)))


def config_tag(done: dict[str, Any]) -> str:
    """A short name for a recorded run's options, for the folder it is set aside as."""
    configs = json.dumps([done["model_config"], done["train_config"]], sort_keys=True)
    return "config-" + hashlib.sha256(configs.encode()).hexdigest()[:8]


def unconditional(name: str) -> str:
    """The unconditional recipe a conditional one (NAME+conditional) is compared with: the
    same recipe without +conditional and without the options of conditional runs alone."""
    parts = name.removesuffix("+conditional").split("+")
    return "+".join(p for p in parts if p.split("=")[0] not in CONDITIONAL_ONLY)


def ramp_text() -> str:
    """The DCGAN's default conditioning ramp in words: "1/12 to 1/3"."""
    start, end = (Fraction(f).limit_denominator(100) for f in MODELS["dcgan"].conditional_ramp)
    return f"{start} to {end}"
