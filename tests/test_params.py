"""params.yaml validation: every bad key or value is one line naming it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import PROJECT
from deepfake_audio.config import architectures
from deepfake_audio.config.params import (
    FEATURE_KINDS,
    Choice,
    FloatRange,
    IntRange,
    Params,
    ParamsError,
    load_params,
    parse_params,
)


def project_params() -> dict:
    return yaml.safe_load((PROJECT / "params.yaml").read_text())


def test_project_params_are_valid_and_typed() -> None:
    params = load_params(PROJECT / "params.yaml")
    assert params.data.source == "demo"
    assert params.features.kind == "lfcc" and params.features.sample_rate == 16000
    assert params.model.architecture == "tdnn"
    assert params.tune.tuner == "random" and params.tune.objective == "val_eer"
    assert params.tune.workers == 1
    assert params.tune.search_space == {
        "channels": IntRange(64, 128, 32),
        "dense_units": IntRange(64, 256, 64),
        "learning_rate": FloatRange(3e-4, 3e-3, "log"),
        "optimizer": Choice(("adam",)),
    }
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    raw["model"]["architecture"] = "compact_cnn"
    space = parse_params(raw).tune.search_space
    # The notebook's ranges, for the CNNs that read its knobs.
    assert space["filters_1"] == IntRange(32, 128, 32)
    assert space["filters_2"] == IntRange(64, 256, 64)
    assert space["kernel_size_1"] == Choice((3, 5))
    assert space["dense_units"] == IntRange(64, 256, 64)
    assert space["learning_rate"] == FloatRange(1e-5, 1e-3, "log")
    assert space["optimizer"] == Choice(("adam", "rmsprop"))
    assert params.tune.early_stopping.patience == 5
    assert params.tune.reduce_lr.factor == 0.2 and params.tune.reduce_lr.min_delta == 0.005
    assert params.mlflow.experiment_name == "deepfake-audio"
    assert params.registry.model_name == "deepfake-audio-cnn"


def test_calibration_and_gate_defaults_are_asvspoof5s_operating_point() -> None:
    for params in (load_params(PROJECT / "params.yaml"), parse_params(None)):
        cal = params.calibration
        assert (cal.method, cal.threshold) == ("logistic", "bayes")
        assert (cal.target_prior, cal.c_miss, cal.c_fa) == (0.05, 1.0, 10.0)
        assert params.registry.promote_metric == "test_eer"
    custom = parse_params(
        {
            "calibration": {"method": "isotonic", "threshold": "validation_eer", "c_fa": 2},
            "registry": {"promote_metric": "test_act_dcf"},
        }
    )
    assert custom.calibration.method == "isotonic" and custom.calibration.c_fa == 2.0
    assert custom.calibration.threshold == "validation_eer"
    assert custom.registry.promote_metric == "test_act_dcf"
    assert custom.section("calibration")["target_prior"] == 0.05


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested plain data as `section.key` -> value, for a key-by-key comparison."""
    if isinstance(data, dict) and data:
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flat(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def test_the_code_defaults_are_params_yaml_key_by_key() -> None:
    """params.yaml is where a default lives: every dataclass default is its value there."""
    shipped = _flat(dataclasses.asdict(load_params(PROJECT / "params.yaml")))
    code = _flat(dataclasses.asdict(Params()))
    # Params() has no search space: the architecture's own (below) is its default.
    shipped = {k: v for k, v in shipped.items() if not k.startswith("tune.search_space")}
    code = {k: v for k, v in code.items() if not k.startswith("tune.search_space")}
    assert set(code) == set(shipped)
    differ = {key: (code[key], shipped[key]) for key in code if code[key] != shipped[key]}
    assert differ == {}, "dataclass default != params.yaml (code, params.yaml)"


def test_an_empty_params_yaml_means_the_shipped_one() -> None:
    """Every default parse_params falls back on is the dataclass's (no literal of its own)."""
    shipped = _flat(dataclasses.asdict(load_params(PROJECT / "params.yaml")))
    empty = _flat(dataclasses.asdict(parse_params(None)))
    assert empty == shipped
    assert parse_params(None).features.n_frames == 1 + 32000 // 160


def test_each_architecture_default_search_space_is_params_yaml_s() -> None:
    """SEARCH_SPACE in models/<name>.py (the default) and tune.search_space.<name> agree."""
    blocks = project_params()["tune"]["search_space"]
    catalogue = architectures.catalogue()
    assert sorted(blocks) == sorted(catalogue), "one params.yaml block per architecture"
    for name, architecture in catalogue.items():
        assert architecture.search_space == blocks[name], name
        assert set(architecture.inputs) <= set(FEATURE_KINDS), name
    # And the default is what a params.yaml without blocks searches.
    for name in catalogue:
        kind = catalogue[name].inputs[0]
        raw = {"model": {"architecture": name}, "features": {"kind": kind}}
        if kind == "image":
            raw["data"] = {"source": "images", "path": "x"}
        with_block = {**raw, "tune": {"search_space": {name: blocks[name]}}}
        assert parse_params(raw).tune.search_space == parse_params(with_block).tune.search_space


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"data": {"source": "s3"}}, "data.source: 's3' is not allowed (allowed: demo, folders"),
        ({"data": {"on_bad_file": "ignore"}}, "data.on_bad_file: 'ignore' is not allowed"),
        (
            {"data": {"validation_codec": "aac"}},
            "data.validation_codec: 'aac' is not allowed (allowed: mp3, ogg)",
        ),
        (
            {
                "data": {"source": "images", "validation_codec": "mp3"},
                "features": {"kind": "image"},
            },
            "data.validation_codec: needs audio",
        ),
        (
            {"data": {"source": "folders", "path": None}},
            "data.path: is required when data.source is 'folders'",
        ),
        (
            {"tune": {"tuner": "grid"}},
            "tune.tuner: 'grid' is not allowed (allowed: random, bayesian",
        ),
        ({"tune": {"objective": "loss"}}, "tune.objective: 'loss' is not allowed"),
        ({"tune": {"max_trials": 0}}, "tune.max_trials: 0 is below the minimum 1"),
        ({"tune": {"epochs": "ten"}}, "tune.epochs: 'ten' is not an integer"),
        ({"tune": {"maxtrials": 3}}, "tune.maxtrials: unknown key (allowed: tuner"),
        ({"tune": {"batch_size": True}}, "tune.batch_size: True is not an integer"),
        ({"features": {"sample_rate": 100}}, "features.sample_rate: 100 is below the minimum"),
        ({"features": {"kind": "mfcc"}}, "features.kind: 'mfcc' is not allowed"),
        ({"features": {"win_length": 1024}}, "features.win_length: 1024 exceeds n_fft 512"),
        ({"model": {"architecture": "resnet"}}, "model.architecture: 'resnet' is not allowed"),
        ({"registry": {"promote_min_improvement": -1}}, "registry.promote_min_improvement: -1"),
        (
            {"mlflow": {"experiment_name": ""}},
            "mlflow.experiment_name: '' is not a non-empty string",
        ),
        ({"colour": 1}, "colour: unknown key"),
        (
            {"calibration": {"method": "platt"}},
            "calibration.method: 'platt' is not allowed (allowed: logistic, isotonic, none)",
        ),
        (
            {"calibration": {"threshold": "eer"}},
            "calibration.threshold: 'eer' is not allowed (allowed: bayes, validation_eer)",
        ),
        ({"calibration": {"target_prior": 0}}, "calibration.target_prior: 0.0 is not strictly"),
        ({"calibration": {"target_prior": 1.0}}, "calibration.target_prior: 1.0 is not strictly"),
        ({"calibration": {"target_prior": "5%"}}, "calibration.target_prior: '5%' is not a finite"),
        ({"calibration": {"c_fa": 0}}, "calibration.c_fa: 0.0 is not above 0"),
        ({"calibration": {"c_miss": -1}}, "calibration.c_miss: -1.0 is not above 0"),
        ({"calibration": {"prior": 0.1}}, "calibration.prior: unknown key (allowed: method"),
        (
            {"registry": {"promote_metric": "test_auc"}},
            "registry.promote_metric: 'test_auc' is not allowed (allowed: test_eer, test_min_dcf, "
            "test_act_dcf, test_cllr, xcorpus_eer)",
        ),
        (
            {"tune": {"search_space": {"learning_rate": {"min": 0, "max": 1, "sampling": "log"}}}},
            "tune.search_space: missing channels",
        ),
    ],
)
def test_bad_values_name_the_key(patch: dict, message: str) -> None:
    raw = project_params()
    for section, values in patch.items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section].update(values)
        else:
            raw[section] = values
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_search_space_entries_are_checked() -> None:
    key = "tune.search_space.compact_cnn"
    raw = project_params()
    raw["tune"]["search_space"]["compact_cnn"]["learning_rate"] = {
        "min": 0.0,
        "max": 1e-3,
        "sampling": "log",
    }
    with pytest.raises(ParamsError, match=f"{key}.learning_rate.min: log sampling needs"):
        parse_params(raw)
    raw = project_params()
    raw["tune"]["search_space"]["compact_cnn"]["optimizer"] = ["adam", "sgd"]
    with pytest.raises(ParamsError, match="optimizer: must be a list drawn from: adam, rmsprop"):
        parse_params(raw)
    raw = project_params()
    raw["tune"]["search_space"]["compact_cnn"]["filters_1"] = {"min": 128, "max": 32}
    with pytest.raises(ParamsError, match="filters_1: min 128 is above max 32"):
        parse_params(raw)


def test_each_architecture_searches_its_own_space() -> None:
    raw = project_params()
    for name in ("compact_cnn", "seed_cnn", "lcnn", "aasist", "aasist_l"):
        assert name in raw["tune"]["search_space"], f"params.yaml states {name}'s space"
    raw["model"] = {"architecture": "lcnn"}
    space = parse_params(raw).tune.search_space
    assert sorted(space) == ["dropout", "learning_rate", "optimizer"]
    assert space["dropout"] == Choice((0.5, 0.7))
    # A space that is not in use is still checked: a typo fails now, not in a later run.
    raw = project_params()
    raw["tune"]["search_space"]["aasist"]["dropout"] = [0.3, 1.5]
    with pytest.raises(
        ParamsError, match=r"search_space.aasist.dropout: must be rates in \[0, 1\)"
    ):
        parse_params(raw)
    raw = project_params()
    raw["tune"]["search_space"]["lcnn"]["filters_1"] = [32]
    with pytest.raises(ParamsError, match="search_space.lcnn.filters_1: unknown key"):
        parse_params(raw)
    raw = project_params()
    del raw["tune"]["search_space"]["lcnn"]["dropout"]
    with pytest.raises(ParamsError, match="search_space.lcnn: missing dropout"):
        parse_params(raw)


def test_a_flat_search_space_is_the_current_architectures() -> None:
    """The format from before there were several architectures still reads."""
    flat = project_params()["tune"]["search_space"]["seed_cnn"]
    params = parse_params({"model": {"architecture": "seed_cnn"}, "tune": {"search_space": flat}})
    assert params.tune.search_space["filters_2"] == IntRange(64, 256, 64)


def test_the_architecture_must_take_the_feature_kind() -> None:
    with pytest.raises(
        ParamsError, match="model.architecture: 'lcnn' does not take features.kind 'image'"
    ):
        parse_params(
            {
                "data": {"source": "images", "path": "x"},
                "features": {"kind": "image"},
                "model": {"architecture": "lcnn"},
            }
        )
    with pytest.raises(ParamsError, match="'aasist' does not take features.kind 'logmel'"):
        parse_params({"features": {"kind": "logmel"}, "model": {"architecture": "aasist"}})


def test_load_params_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("tune: [unclosed\n")
    with pytest.raises(ParamsError, match=r"params.yaml: not valid YAML at line"):
        load_params(bad)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    bad.write_text("tune:\n  tuner: grid\n")
    with pytest.raises(ParamsError, match=r"^.*params.yaml: tune.tuner: 'grid'"):
        load_params(bad)
