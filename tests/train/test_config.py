"""Training configs: typed construction, overrides, validation, recipes."""

from __future__ import annotations

import json
import re

import pytest

from omnivis.errors import ConfigError
from omnivis.train import RECIPES, TrainConfig, apply_overrides, config_from_dict, resolve_config
from omnivis.train.config import validate


def test_round_trip_through_json_is_identity() -> None:
    config = apply_overrides(RECIPES["tiny-world-cpu"](), ['data.mixture={"<OD>": 2, "<CAPTION>": 1}'])
    assert config_from_dict(json.loads(config.to_json())) == config


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_valid_once_given_its_data(name: str) -> None:
    config = resolve_config(name, data="some/dataset", init="/models/x" if name == "base-finetune" else None)
    validate(config)
    assert RECIPES[name].__doc__ and "Command:" in RECIPES[name].__doc__


def test_overrides_parse_by_field_type() -> None:
    config = apply_overrides(
        TrainConfig(),
        ["steps=20", "optim.learning_rate=3e-4", "model.freeze=vision,projector", "deterministic=true",
         "data.train=my data/dir", "optim.betas=[0.9, 0.95]", "model.image_size=384"],
    )  # fmt: skip
    assert config.steps == 20
    assert config.optim.learning_rate == 3e-4
    assert config.model.freeze == ("vision", "projector")
    assert config.deterministic is True
    assert config.data.train == "my data/dir"
    assert config.optim.betas == (0.9, 0.95)
    assert config.model.image_size == 384


@pytest.mark.parametrize(
    ("text", "expected"),
    [("vision", ("vision",)), ("[vision]", ("vision",)), ("[vision, projector]", ("vision", "projector")),
     ('["vision"]', ("vision",)), ("[]", ())],
)  # fmt: skip
def test_tuple_overrides_take_a_bare_or_bracketed_list(text: str, expected: tuple[str, ...]) -> None:
    config = apply_overrides(TrainConfig(), ["data.train=x", f"model.freeze={text}"])
    assert config.model.freeze == expected


def test_integers_are_accepted_for_float_fields() -> None:
    assert (
        apply_overrides(
            TrainConfig(data=TrainConfig().data), ["data.train=x", "optim.learning_rate=1"]
        ).optim.learning_rate
        == 1.0
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"stepz": 3}, "unknown config field(s) stepz"),
        ({"optim": {"learnin_rate": 1e-3}}, "optim.learnin_rate"),
        ({"steps": "10"}, "steps must be an integer"),
        ({"steps": 2.5}, "steps must be an integer"),
        ({"deterministic": 1}, "deterministic must be true or false"),
        ({"optim": {"learning_rate": "fast"}}, "optim.learning_rate must be a finite number"),
        ({"optim": {"betas": [0.9]}}, "optim.betas must hold 2 values"),
        ({"model": {"freeze": "vision"}}, "model.freeze must be a list"),
        ({"data": {"mixture": {"<OD>": "lots"}}}, "data.mixture['<OD>'] must be a finite number"),
        ({"model": 3}, "model must be an object"),
    ],
)
def test_wrong_fields_and_types_name_the_field(values: dict, message: str) -> None:
    values = {"data": {"train": "x"}, **values} if "data" not in values else values
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(values)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("steps=0", "steps must be >= 1"),
        ("optim.learning_rate=-1", "optim.learning_rate must be > 0"),
        ("model.preset=huge", "model.preset 'huge' is not one of"),
        ("model.freeze=vision,wheels", "model.freeze: 'wheels'"),
        ('data.mixture={"<DANCE>": 1}', "unknown task '<DANCE>'"),
        ('optim.task_loss_weights={"<DANCE>": 2}', r"optim.task_loss_weights: unknown task '<DANCE>'"),
        ('optim.task_loss_weights={"<VQA>": 0}', r"optim.task_loss_weights\['<VQA>'\] must be > 0, got 0"),
        ("model.image_size=100", "multiple of 32"),
        ("precision=float8", "precision must be one of"),
        ("optim.schedule=exponential", "optim.schedule must be one of"),
        ("data.examples_per_image=0", "data.examples_per_image must be >= 1"),
        (["model.init=/some/checkpoint", "model.ordinal_locations=true"], "needs model.init=scratch"),
        ("model.vision_init_projector=true", "takes the projector of model.vision_init: give that checkpoint"),
        (["model.vision_init=/v", "model.vision_init_text_encoder=true"],
         "needs model.vision_init_projector=true"),
        (["model.vision_init=/v", "model.vision_init_projector=true", "model.vision_init_token_table=true"],
         "needs model.vision_init_text_encoder=true"),
        (["model.vision_init=/v", "model.vision_init_projector=true", "model.vision_init_text_encoder=true",
          "model.vision_init_token_table=true", "model.ordinal_locations=true"], "replaces: drop one"),
        (["model.vision_init=/v", "model.vision_init_projector=true", "model.sinusoid_image_positions=true"],
         "shapes a from-scratch projector"),
        (["model.init=/some/checkpoint", "model.sinusoid_image_positions=true"], "needs model.init=scratch"),
        ('data.curriculum={"data/easy": 0}', r"data.curriculum\['data/easy'\] must be >= 1 steps, got 0"),
        ('data.curriculum={"": 5}', "data.curriculum: a lesson must name a dataset directory"),
        ('data.curriculum={"data/easy": "many"}', "data.curriculum"),
    ],
)
def test_out_of_range_values_are_refused(override: str | list[str], message: str) -> None:
    overrides = [override] if isinstance(override, str) else override
    with pytest.raises(ConfigError, match=message):
        apply_overrides(TrainConfig(), ["data.train=x", *overrides])


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        apply_overrides(TrainConfig(), ["data.train=x", "steps=0", "batch_size=0"])
    assert "steps must be >= 1" in str(caught.value) and "batch_size must be >= 1" in str(caught.value)


@pytest.mark.parametrize("override", ["steps", "=3", "nosuch.field=1", "optim.nosuch=1", "steps.value=3"])
def test_malformed_or_unknown_overrides_are_refused(override: str) -> None:
    with pytest.raises(ConfigError):
        apply_overrides(TrainConfig(), ["data.train=x", *override.split()])


def test_a_missing_dataset_is_refused() -> None:
    with pytest.raises(ConfigError, match="data.train must name a dataset directory"):
        config_from_dict({})


def test_resolve_config_from_a_file_and_shortcuts(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(RECIPES["tiny-world-cpu"]().to_json())
    config = resolve_config(config_file=path, data="d=1", out="o", overrides=["steps=7"])
    assert (config.data.train, config.out, config.steps) == ("d=1", "o", 7)
    with pytest.raises(ConfigError, match="exactly one"):
        resolve_config("tiny-world-cpu", path)
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_config("nope")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="cannot read the config file"):
        resolve_config(config_file=tmp_path / "bad.json")
