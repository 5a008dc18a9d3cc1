"""Config validation: every bad key or value is named in one clear message."""

from __future__ import annotations

import pytest

from metarl.config import ConfigError, from_dict, parse_overrides, read_yaml, to_dict
from metarl.experiments import load_config
from metarl.supervised.config import SinusoidConfig


def test_defaults_are_the_paper_protocol():
    c = load_config("sinusoid")
    assert (c.k_shot, c.meta_batch_size, c.meta_lr, c.inner_lr) == (10, 25, 1e-3, 0.01)
    assert (c.iterations, c.inner_steps, c.hidden_sizes) == (70_000, 1, [40, 40])
    assert c.amplitude_range == [0.1, 5.0] and c.input_range == [-5.0, 5.0]
    assert c.meta_gradient == "second_order"


def test_overrides_are_parsed_as_yaml_and_coerced():
    c = load_config("sinusoid", ["inner_lr=0.001", "hidden_sizes=[20, 20]", "meta_lr=1"])
    assert c.inner_lr == 0.001 and c.hidden_sizes == [20, 20]
    assert isinstance(c.meta_lr, float)


@pytest.mark.parametrize(
    "pair, message",
    [
        ("inner_lrr=0.1", "unknown config key 'inner_lrr'.*Did you mean 'inner_lr'"),
        ("k_shot=ten", "k_shot: expected an integer"),
        ("k_shot=2.5", "k_shot: expected an integer"),
        ("k_shot=0", "k_shot: 0 is below the minimum 1"),
        ("meta_gradient=third_order", "meta_gradient: 'third_order' is not one of"),
        ("tensorboard=1", "tensorboard: expected true or false"),
        ("hidden_sizes=40", "hidden_sizes: expected a list"),
        ("amplitude_range=[5, 1]", "amplitude_range: expected \\[low, high\\]"),
        ("log_every=30", "checkpoint_every .* must be a multiple of log_every"),
        ("device=tpu", "device"),
        ("meta_lr=.nan", "meta_lr: expected a finite number"),
    ],
)
def test_bad_values_name_the_field(pair, message):
    with pytest.raises(ConfigError, match=message):
        load_config("sinusoid", [pair])


def test_bad_override_syntax_and_unknown_experiment(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["iterations"])
    with pytest.raises(ConfigError, match="unknown experiment 'sinusiod'.*sinusoid"):
        load_config("sinusiod")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        read_yaml(bad)
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "missing.yaml")


def test_yaml_file_config(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("experiment: sinusoid\nk_shot: 5\n")
    c = load_config(str(path))
    assert c.k_shot == 5 and c.experiment == "sinusoid"


def test_from_dict_round_trip():
    c = from_dict(SinusoidConfig, {"eval_lr": 0.02})
    assert c.eval_lr == 0.02 and from_dict(SinusoidConfig, to_dict(c)) == c
    assert from_dict(SinusoidConfig, {"eval_lr": [0.02, 0.01]}).eval_lr == [0.02, 0.01]
    with pytest.raises(ConfigError, match="eval_lr"):
        from_dict(SinusoidConfig, {"eval_lr": -1.0})


def test_shared_knobs_are_declared_once_with_family_defaults():
    """Every family reads the meta-learning knobs from one declaration (one doc, one range);
    only the defaults differ, and a stored config with an old key name is upgraded."""
    from metarl.config import MetaLearningConfig, field_docs, field_metadata, upgrade
    from metarl.rl.config import RLConfig
    from metarl.supervised.classification_config import ClassificationConfig

    shared = field_docs(MetaLearningConfig)
    for cls in (SinusoidConfig, ClassificationConfig, RLConfig):
        docs = field_docs(cls)
        assert {k: docs[k] for k in shared} == shared, cls.__name__
        assert field_metadata(cls, "iterations") is field_metadata(MetaLearningConfig, "iterations")
    assert [from_dict(c, {}).iterations for c in (SinusoidConfig, ClassificationConfig, RLConfig)
            ] == [70_000, 60_000, 500]  # fmt: skip
    with pytest.raises(ConfigError, match="iterations: 0 is below the minimum 1"):
        from_dict(RLConfig, {"iterations": 0})  # the inherited bound holds for the override
    old = {"experiment": "omniglot-5w1s", "eval_episodes": 100, "eval_inner_steps": 3}
    assert from_dict(ClassificationConfig, upgrade(ClassificationConfig, old)).eval_tasks == 100


def test_a_checkpoint_from_before_a_key_existed_keeps_how_it_was_trained(tmp_path):
    """A MAML++ run stored before BNWB had no per-step BatchNorm tensors: it loads with
    ``bn_per_step_weights`` false, while a new run gets the paper's default (true)."""
    import torch

    import metarl
    from metarl.benchmarks.runner import missing_dataset
    from metarl.config import to_dict, upgrade
    from metarl.experiments import load_config
    from metarl.supervised.classification_config import ClassificationConfig

    fresh = load_config("omniglot-5w1s", {"algorithm": "maml_plus_plus"})
    assert fresh.bn_per_step_weights
    stored = to_dict(fresh)
    assert upgrade(ClassificationConfig, stored)["bn_per_step_weights"] is True
    del stored["bn_per_step_weights"]
    assert upgrade(ClassificationConfig, stored)["bn_per_step_weights"] is False
    if (missing := missing_dataset("omniglot-5w1s")) is not None:
        pytest.skip(missing)
    # A whole checkpoint of that era: written without the key and without the tensors.
    run = tmp_path / "old"
    metarl.train("omniglot-5w1s", out=run, progress=False, overrides=[
        "algorithm=maml_plus_plus", "bn_per_step_weights=false", "iterations=1",
        "meta_batch_size=2", "chunk_tasks=0", "chunk_workers=1", "filters=4",
        "tensorboard=false"])  # fmt: skip
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    del state["config"]["bn_per_step_weights"]
    torch.save(state, run / "checkpoint.pt")
    loaded = metarl.load_run(run)
    assert loaded.config.bn_per_step_weights is False and loaded.algorithm.per_step is None


def test_support_statistics_needs_conv4_batchnorm():
    """Normalising a query by the support set happens inside Conv-4's BatchNorm; the MLP has
    none that could, so the combination is refused when the config is read."""
    with pytest.raises(ConfigError, match="set network=conv4 or bn_policy=transductive"):
        load_config("mnist-mlp-5w1s", {"bn_policy": "support_statistics"})
    assert load_config("mnist-5w1s", {"bn_policy": "support_statistics"}).network == "conv4"
