"""The experiment configs state the paper's recipe (§2.3, Table 2) and reject what does not exist."""

import importlib
import pkgutil

import pytest

import experiments.configs

TABLE2 = {  # peak learning rate, training tokens
    "llama_7b": (3.0e-4, 1.0e12),
    "llama_13b": (3.0e-4, 1.0e12),
    "llama_33b": (1.5e-4, 1.4e12),
    "llama_65b": (1.5e-4, 1.4e12),
}
EXPERIMENTS = sorted(m.name for m in pkgutil.iter_modules(experiments.configs.__path__) if m.name != "common")


@pytest.mark.parametrize("name", sorted(TABLE2))
def test_paper_configs_follow_table_2_and_section_2_3(name):
    c = importlib.import_module(f"experiments.configs.{name}").get_config()
    peak_lr, tokens = TABLE2[name]
    assert c.model_preset == name and c.optimizer.peak_lr == peak_lr
    assert c.train.global_batch_size * c.train.seq_len == 4 * 2**20  # "4M" tokens per batch, context 2048
    assert c.train.steps * 4 * 2**20 == pytest.approx(tokens, rel=1e-5)
    o = c.optimizer
    assert (o.b1, o.b2, o.weight_decay, o.clip_norm, o.warmup_steps, o.final_lr_fraction) == (0.9, 0.95, 0.1, 1.0, 2000, 0.1)
    assert c.model.norm_eps == 1e-6 and c.model.vocab_size == 32000 and c.model.dtype == "bfloat16"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_config_is_locked(name):
    c = importlib.import_module(f"experiments.configs.{name}").get_config()
    with pytest.raises(AttributeError):
        c.train.stpes = 10
    with pytest.raises(AttributeError):
        c.model.dimension = 4096
