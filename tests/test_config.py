"""Recipe composition: every recipe composes; unknown keys and bad values are rejected by name."""

from __future__ import annotations

import pytest

from vidbench.config import compose, config_hash, list_recipes, run_dir
from vidbench.errors import ConfigError

RECIPES = [p.stem for p in list_recipes()]


def test_recipes_exist_for_every_dataset_and_head():
    for head in ("meanp", "seqtransf"):
        for ds in ("msrvtt-9k_1ka", "msvd", "vatex", "lsmdc", "activitynet", "didemo"):
            assert any(r.startswith(f"clip4clip-{head}_vitb32") and r.endswith(ds) for r in RECIPES), (
                head,
                ds,
            )


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_composes(recipe):
    cfg = compose(recipe)
    assert cfg.run.name == recipe
    assert cfg.method.name
    assert run_dir(cfg).parts[-2:] == (recipe, "seed0")


def test_paper_hyperparameters_msrvtt():
    cfg = compose("clip4clip-seqtransf_vitb32_12f_b128_5e_msrvtt-9k_1ka")
    assert (cfg.data.max_words, cfg.data.max_frames, cfg.data.batch_size) == (32, 12, 128)
    assert (cfg.optim.lr, cfg.optim.coef_lr, cfg.optim.weight_decay, cfg.trainer.max_epochs) == (
        1e-4,
        1e-3,
        0.2,
        5,
    )
    assert cfg.method.sim_header == "seqTransf" and cfg.model.freeze_layer_num == 0
    anet = compose("clip4clip-meanp_vitb32_64f_b128_5e_activitynet")
    assert (anet.data.max_words, anet.data.max_frames, anet.data.test_split) == (64, 64, "val_1")


def test_overrides_apply_and_change_the_hash():
    a = compose("clip4clip-meanp_tiny_8f_b64_synth-msrvtt")
    b = compose("clip4clip-meanp_tiny_8f_b64_synth-msrvtt", ["optim.lr=0.5", "run.seed=3"])
    assert b.optim.lr == 0.5 and run_dir(b).name == "seed3"
    assert config_hash(a) != config_hash(b)
    assert config_hash(a) == config_hash(compose("clip4clip-meanp_tiny_8f_b64_synth-msrvtt"))


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("optim.lrr=1", "optim.lrr"),
        ("method.interaction=wti", "method.interaction"),
        ("trainer.max_epochs=many", "trainer.max_epochs"),
        ("data.missing_policy_test=maybe", "data.missing_policy_test"),
        ("nonsense=1", "nonsense"),
    ],
)
def test_bad_keys_are_named(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        compose("clip4clip-meanp_tiny_8f_b64_synth-msrvtt", [override])


def test_unknown_recipe_and_malformed_override():
    with pytest.raises(ConfigError, match="not found"):
        compose("no-such-recipe")
    with pytest.raises(ConfigError, match="key=value"):
        compose("clip4clip-meanp_tiny_8f_b64_synth-msrvtt", ["optim.lr"])


def test_hash_ignores_where_things_are_but_not_what_is_computed():
    a = compose("clip4clip-meanp_tiny_8f_b64_synth-msrvtt")
    moved = compose("clip4clip-meanp_tiny_8f_b64_synth-msrvtt", ["paths.runs_dir=/elsewhere", "data.num_workers=7"])
    assert config_hash(a) == config_hash(moved)
    assert config_hash(a) != config_hash(compose("clip4clip-meanp_tiny_8f_b64_synth-msrvtt", ["data.max_frames=4"]))
