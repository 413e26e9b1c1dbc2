"""Several named corpora (data.corpora): the list's checks, the dataset it builds, and the
cross-corpus numbers, on tiny corpora of real audio files written here."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import voice
from deepfake_audio.config.params import ParamsError, parse_params
from deepfake_audio.dataset.shards import SpectrogramDataset
from deepfake_audio.scoring import metrics, xcorpus
from deepfake_audio.sources import list_clips
from deepfake_audio.stages import dataset

FEATURES = {"kind": "logmel", "clip_seconds": 0.5, "n_mels": 16, "workers": 1}


def write_corpus(
    root: Path, groups: int, rate: int, systems: tuple[str, ...] = ("tts-a", "tts-b"), seed=0
) -> Path:
    """A flat real/ + fake/ corpus: per group one real and one fake per system, files named
    `u<group>_<system>.wav`, and a manifest.csv with the shared corpora's columns."""
    rows = []
    for g in range(groups):
        for label, names in (("real", ("real",)), ("fake", systems)):
            for name in names:
                rel = f"{label}/u{g:02d}_{name}.wav"
                (root / label).mkdir(parents=True, exist_ok=True)
                wave = voice(seed + 100 * g + len(rows), 0.6, rate)
                if label == "fake":
                    wave = np.clip(wave * 1.5 + 0.01 * np.sin(np.arange(wave.size)), -1, 1)
                sf.write(root / rel, wave, rate)
                rows.append({"file": rel, "label": label, "group": f"u{g:02d}", "system": name})
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=("file", "label", "group", "system"))
        writer.writeheader()
        writer.writerows(rows)
    return root


def corpora_params(data: Path, entries: list[dict], **extra) -> object:
    raw = {
        "features": FEATURES,
        "data": {"path": str(data), "shard_size": 4, "corpora": entries},
        **extra,
    }
    return parse_params(raw)


def entry(name: str, path: Path, role: str = "train") -> dict:
    return {"name": name, "path": str(path), "role": role, "group_pattern": r"^(u\d+)_"}


@pytest.mark.parametrize(
    ("entries", "extra", "message"),
    [
        ([{"name": "a", "role": "train"}], {}, "data.corpora[0].path: is required (corpus 'a')"),
        (
            [{"name": "a", "path": "{data}/a", "role": "test"}],
            {},
            "data.corpora[0].role: 'test' is not allowed (allowed: train, select, eval)",
        ),
        (
            [{"name": "a", "path": "{data}/a"}, {"name": "a", "path": "{data}/b"}],
            {},
            "data.corpora[1].name: 'a' is a duplicate",
        ),
        (
            [{"name": "a.b", "path": "{data}/a"}],
            {},
            "data.corpora[0].name: 'a.b' is not a corpus name",
        ),
        (
            [{"name": "a", "path": "/elsewhere/a"}],
            {},
            "data.corpora[0].path: '/elsewhere/a' (corpus 'a') is not inside data.path",
        ),
        (
            [{"name": "a", "path": "{data}/a", "role": "eval"}],
            {},
            "data.corpora: no entry has role: train",
        ),
        (
            [{"name": "a", "path": "{data}/a", "colour": 1}],
            {},
            "data.corpora[0].colour: unknown key",
        ),
        (
            [{"name": "a", "path": "{data}/a"}, {"name": "b", "path": "{data}/b", "role": "eval"}],
            {"tune": {"objective": "xcorpus_eer"}},
            "tune.objective: xcorpus_eer needs a data.corpora entry with role: select",
        ),
        (
            [
                {"name": "a", "path": "{data}/a"},
                {"name": "b", "path": "{data}/b", "role": "select"},
            ],
            {"registry": {"promote_metric": "xcorpus_eer"}},
            "registry.promote_metric: xcorpus_eer needs a data.corpora entry with role: eval",
        ),
        (
            [],
            {"registry": {"promote_metric": "xcorpus_eer"}},
            "registry.promote_metric: xcorpus_eer needs a data.corpora entry with role: eval",
        ),
    ],
)
def test_a_bad_corpus_list_is_one_line_naming_the_key(
    tmp_path: Path, entries: list, extra: dict, message: str
) -> None:
    data = tmp_path / "data"
    for e in entries:
        if "path" in e:
            e["path"] = e["path"].format(data=data)
    with pytest.raises(ParamsError) as err:
        corpora_params(data, entries, **extra)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_no_corpus_list_is_the_single_corpus_as_before() -> None:
    params = parse_params(None)
    assert params.data.corpora == () and params.data.roles() == set()
    assert list_clips(params)[0].corpus == ""


def test_a_missing_corpus_folder_names_its_entry(tmp_path: Path) -> None:
    params = corpora_params(tmp_path, [entry("gone", tmp_path / "gone")])
    with pytest.raises(Exception) as err:
        list_clips(params)
    assert (
        str(err.value)
        == f"data.corpora[0].path: {tmp_path / 'gone'} (corpus 'gone') is not a directory"
    )


def test_corpora_build_one_dataset_with_held_out_splits(tmp_path: Path) -> None:
    data = tmp_path / "datasets"
    write_corpus(data / "alpha", groups=6, rate=16000)
    write_corpus(data / "beta", groups=2, rate=22050, systems=("voc-x",), seed=7)
    write_corpus(data / "gamma", groups=2, rate=24000, systems=("voc-y", "voc-z"), seed=9)
    params = corpora_params(
        data,
        [
            entry("alpha", data / "alpha"),
            entry("beta", data / "beta", "select"),
            entry("gamma", data / "gamma", "eval"),
        ],
        tune={"objective": "xcorpus_eer"},
        registry={"promote_metric": "xcorpus_eer"},
    )
    assert params.tune.early_stopping.monitor == "xcorpus_eer"  # follows the objective
    clips = list_clips(params)
    by_corpus = {c.corpus for c in clips}
    assert by_corpus == {"alpha", "beta", "gamma"}
    assert {c.split for c in clips if c.corpus == "alpha"} == {"train", "validation", "test"}
    assert {c.split for c in clips if c.corpus == "beta"} == {"xcorpus_select"}
    assert {c.split for c in clips if c.corpus == "gamma"} == {"xcorpus_eval"}
    # The manifest's system column is the attack id of a fake; clip ids carry the corpus.
    fake = next(c for c in clips if c.corpus == "gamma" and c.label == "spoof")
    assert fake.attack in {"voc-y", "voc-z"} and fake.clip_id.startswith("gamma/fake/")
    assert all(c.attack == "-" for c in clips if c.label == "bonafide")

    summary = dataset.build(params, clips, tmp_path / "spec", tmp_path / "reports")
    assert summary["per_split"]["xcorpus_eval"] == {"bonafide": 2, "spoof": 4}
    assert summary["per_split"]["xcorpus_select"] == {"bonafide": 2, "spoof": 2}
    spec = SpectrogramDataset(tmp_path / "spec")
    held = spec.manifest("xcorpus_eval")
    assert set(held["corpus"]) == {"gamma"} and set(held["attack"]) == {"-", "voc-y", "voc-z"}
    # Every rate was resampled to features.sample_rate: one feature shape for all corpora.
    x, _ = next(spec.iter_shards("xcorpus_eval"))
    assert x.shape[1:] == spec.feature_shape
    assert set(spec.manifest("train")["corpus"]) == {"alpha"}
    # The shortcut audit has each held-out corpus alone, with its lowest cue.
    audit = json.loads((tmp_path / "reports" / "shortcuts.json").read_text())
    assert {"xcorpus.beta", "xcorpus.gamma"} <= set(audit["splits"])
    assert "cue" in audit["splits"]["xcorpus.gamma"]["raw_lowest"]


def test_a_held_out_corpus_without_one_class_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "datasets"
    write_corpus(data / "alpha", groups=6, rate=16000)
    only_real = write_corpus(data / "beta", groups=2, rate=16000, seed=3)
    for path in (only_real / "fake").iterdir():
        path.unlink()
    params = corpora_params(
        data, [entry("alpha", data / "alpha"), entry("beta", only_real, "eval")]
    )
    with pytest.raises(Exception) as err:
        dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")
    assert "corpus 'beta' (xcorpus_eval) has no spoof clips" in str(err.value)
    assert not (tmp_path / "spec").exists()


def test_cross_corpus_numbers_are_each_corpus_alone_and_their_mean() -> None:
    rng = np.random.default_rng(0)
    n = 40
    scores = np.concatenate([rng.normal(1, 1, n), rng.normal(-1, 1, n)] * 3)
    targets = np.concatenate([np.ones(n), np.zeros(n)] * 3).astype(int)
    corpora = np.repeat(["a", "b", "c"], 2 * n)
    roles = np.repeat(["eval", "eval", "select"], 2 * n)
    attacks = np.where(targets == 1, "-", np.where(np.arange(6 * n) % 2, "s1", "s2"))
    scores[corpora == "b"] *= 0.3  # a harder corpus: the same EER (order), another Cllr
    scores[(corpora == "a") & (targets == 0)] += 1.5  # a corpus the detector transfers to worse
    full = xcorpus.report(scores, targets, corpora, roles, attacks)
    for name in "abc":
        here = corpora == name
        bona, spoof = scores[here & (targets == 1)], scores[here & (targets == 0)]
        entry = full["corpora"][name]
        assert entry["eer"] == round(metrics.compute_eer(bona, spoof)[0], 6)
        assert entry["min_dcf"] == round(metrics.min_dcf(bona, spoof)[0], 6)
        assert entry["cllr"] == round(metrics.cllr(bona, spoof), 6)
        assert entry["clips"] == {"bonafide": n, "spoof": n}
        s1 = scores[here & (attacks == "s1")]
        assert entry["per_attack_eer"]["s1"] == round(metrics.compute_eer(bona, s1)[0], 6)
    eers = {name: full["corpora"][name]["eer"] for name in "abc"}
    assert eers["a"] > eers["c"]
    assert full["xcorpus_eer"] == round((eers["a"] + eers["b"]) / 2, 6)  # eval only
    assert full["xcorpus_select_eer"] == eers["c"]
    flat = xcorpus.flat(full)
    assert flat["xcorpus_eer"] == full["xcorpus_eer"]
    assert flat["xcorpus.b.eer"] == eers["b"] and "xcorpus.c.eer.s2" in flat
    assert set(xcorpus.summary(full)["a"]) == {"role", "eer", "min_dcf", "act_dcf", "cllr"}
    only_select = xcorpus.report(
        scores[corpora == "c"], targets[corpora == "c"], ["c"] * 80, ["select"] * 80
    )
    assert only_select["xcorpus_eer"] is None


def test_leave_one_corpus_out_folds_reach_dvc_as_valid_corpus_lists(tmp_path: Path) -> None:
    """Each fold's `-S` overrides, applied by DVC's own override code to a params.yaml,
    give a corpus list that validates: one eval corpus, the select one kept, absolute paths."""
    from benchmarks import loco
    from dvc.utils.hydra import apply_overrides

    corpora = [
        {"name": "a", "path": "../data/a", "group_pattern": r"^(u\d+)_"},
        {"name": "b-2", "path": "../data/b-2", "role": "eval"},
        {"name": "c", "path": "../data/c", "role": "select"},
        {"name": "d_4", "path": "../data/d_4", "group_pattern": r"^((?:lt|x)\d+)_'"},
    ]
    (tmp_path / "project").mkdir()
    plans = loco.plans(corpora, [0, 1], tmp_path / "project", ["tune.max_trials=1"], "0101")
    assert [(p["held_out"], p["seed"]) for p in plans] == [
        (name, seed) for name in ("a", "b-2", "d_4") for seed in (0, 1)
    ]
    assert len({p["name"] for p in plans}) == len(plans)
    for plan in plans[::2]:
        params_file = tmp_path / "params.yaml"
        params_file.write_text(
            "seed: 42\ndata:\n  path: data/raw\n  corpora: []\ntune:\n  max_trials: 3\n"
        )
        apply_overrides(str(params_file), plan["overrides"])
        import yaml

        raw = yaml.safe_load(params_file.read_text())
        assert raw["data"]["path"] == str(tmp_path / "data")
        params = parse_params(raw)
        roles = {c.name: c.role for c in params.data.corpora}
        assert roles.pop(plan["held_out"]) == "eval" and roles.pop("c") == "select"
        assert set(roles.values()) == {"train"}
        assert params.data.corpora[3].group_pattern == r"^((?:lt|x)\d+)_'"
        assert all(Path(c.path).is_absolute() for c in params.data.corpora)
    with pytest.raises(SystemExit):
        loco.folds([corpora[0], corpora[2]])  # one corpus to rotate: nothing to hold out


def test_leave_one_corpus_out_table_and_markdown() -> None:
    from benchmarks import loco

    def run(held: str, seed: int, eer: float) -> dict:
        entry = {"eer": eer, "baseline_lfcc_gmm_eer": 0.4, "best_cue": "rms", "best_cue_eer": 0.3}
        return {"held_out": held, "seed": seed, "metrics": {"xcorpus": {held: entry}}}

    runs = [run("a", 0, 0.1), run("a", 1, 0.3), run("b", 0, 0.5)]
    result = loco.table(runs)
    a = result["corpora"]["a"]
    assert a["eer"]["mean"] == pytest.approx(0.2) and a["eer"]["std"] == pytest.approx(0.141421)
    assert a["baseline_lfcc_gmm_eer"]["mean"] == pytest.approx(0.4)
    assert a["best_cue"] == {"cue": "rms", "eer": 0.3}
    assert result["corpora"]["b"]["eer"]["n"] == 1
    assert result["mean"]["eer"] == pytest.approx(0.35)
    text = loco.markdown(result)
    assert "| a | 20.0 +- 14.1 % (n=2) | 40.0 +- 0.0 % (n=2) | rms 30.0 % |" in text
    assert "| **mean** | 35.0 % | 40.0 % | 30.0 % |" in text


def test_a_corpus_list_is_preprocessed_as_real_speech_by_default(tmp_path: Path) -> None:
    """`data.preprocess.enabled: auto` reads the corpora's source, not `data.source`, whose
    default (demo) names nothing under a corpus list and would switch preprocessing off."""
    from deepfake_audio.stages.dataset import preprocess_of

    write_corpus(tmp_path / "alpha", groups=2, rate=16000)
    params = corpora_params(tmp_path, [entry("alpha", tmp_path / "alpha")])
    assert params.data.source == "demo" and params.data.audio_source() == "folders"
    assert preprocess_of(params) is not None
    assert preprocess_of(parse_params(None)) is None  # the synthetic demo corpus: off
