"""Strict configs: unknown keys are errors, types are checked, configs round-trip."""

import dataclasses
import json

import pytest

from imagegen.common.errors import UsageError, UserError
from imagegen.common.options import (
    build_dataclass,
    differences,
    load_toml,
    parse_assignments,
    to_dict,
    to_json,
)
from imagegen.models.dcgan import DCGANConfig
from imagegen.models.registry import MODELS, get_spec
from imagegen.training.config import TrainConfig


def test_unknown_key_is_an_error_listing_valid_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown dcgan option: g_widht \(valid: .*g_width"):
        build_dataclass(DCGANConfig, {"g_widht": 3}, "dcgan")


def test_types_are_checked_and_coerced() -> None:
    cfg = build_dataclass(DCGANConfig, {"resolution": "32", "latent_dim": 8.0}, "dcgan")
    assert cfg.resolution == 32 and cfg.latent_dim == 8
    with pytest.raises(UsageError, match="expected an integer"):
        build_dataclass(DCGANConfig, {"latent_dim": "many"}, "dcgan")
    with pytest.raises(UsageError, match="expected an integer"):
        build_dataclass(DCGANConfig, {"latent_dim": 2.5}, "dcgan")
    train = build_dataclass(TrainConfig, {"steps": None, "lr": "1e-3"}, "training")
    assert train.steps is None and train.lr == 1e-3


def test_configs_are_frozen_and_round_trip_through_json() -> None:
    cfg = DCGANConfig(resolution=32, channels=1, latent_dim=20, g_width=16, d_width=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.resolution = 64  # type: ignore[misc]
    again = build_dataclass(DCGANConfig, json.loads(to_json(cfg)), "dcgan")
    assert again == cfg
    train = TrainConfig(dataset="mnist", steps=10)
    assert build_dataclass(TrainConfig, to_dict(train), "training") == train


def test_train_config_validation() -> None:
    cases = {  # the message names the flag (a TOML key is the flag without its dashes)
        "batch_size": (0, r"--batch-size must be in \[1, inf\), got 0"),
        "steps": (0, r"--steps must be in \[1, inf\), got 0"),
        "lr": (-1.0, r"--lr must be in \(0, inf\), got -1.0"),
        "ema_decay": (1.0, r"--ema-decay must be in \[0, 1\), got 1.0"),
    }
    for name, (bad, message) in cases.items():
        with pytest.raises(UsageError, match=message):
            TrainConfig(**{name: bad})


def test_differences_name_the_changed_keys() -> None:
    assert differences({"a": 1, "b": 2}, {"a": 1, "b": 3}) == ["b: 2 -> 3"]


def test_parse_assignments() -> None:
    assert parse_assignments(["g-width=8", "latent_dim = 4"]) == {"g_width": "8", "latent_dim": "4"}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_assignments(["oops"])


def test_load_toml(tmp_path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('dataset = "mnist"\nbatch-size = 32\n[model]\nresolution = 32\n')
    assert load_toml(path) == {"dataset": "mnist", "batch_size": 32, "model": {"resolution": 32}}
    path.write_text("not = [valid")
    with pytest.raises(UserError, match="not valid TOML"):
        load_toml(path)
    with pytest.raises(UserError, match="not found"):
        load_toml(tmp_path / "missing.toml")


def test_registry_is_a_literal_dict_of_specs() -> None:
    assert "dcgan" in MODELS
    spec = get_spec("dcgan")
    assert spec.config_cls is DCGANConfig
    assert dataclasses.is_dataclass(spec.config_cls)
    assert spec.config_cls.__dataclass_params__.frozen
    with pytest.raises(UsageError, match=r"unknown model 'gan' \(valid: dcgan"):
        get_spec("gan")
