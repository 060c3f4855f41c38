"""Every file in conf/ composes, and every `_target_` in it instantiates."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rnb.config import compose, config_dir, enabled
from rnb.run.trackers import build_loggers
from tests.sweeps import sweep_jobs, sweep_params

CONF = config_dir()
OPTIONS = sorted((p.parent.name, p.stem) for p in CONF.glob("*/*.yaml") if p.parent.name != "hydra")


def _tiny_pretrained(tmp: Path) -> str:
    """A local GPT-Neo checkpoint standing in for a hub model (no network in tests)."""
    import transformers

    cfg = transformers.GPTNeoConfig(
        vocab_size=300,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        attention_types=[[["global"], 1]],
        max_position_embeddings=64,
        intermediate_size=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    path = tmp / "tiny-gptneo"
    transformers.GPTNeoForCausalLM(cfg).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}/{o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(group: str, option: str, tmp_path: Path) -> None:
    overrides = [f"{group}={option}", f"output_dir={tmp_path}"]
    if group == "data" and option == "files":
        overrides.append(f"data.train_path={tmp_path / 'x.jsonl'}")
    if group == "data" and option == "digits":
        overrides.append("model=mlp_classifier")  # the LM's config reads data.max_length
    if group == "strategy" and option == "static":
        overrides.append("strategy.weights=[1,1]")
    if group == "model" and option not in ("tiny_gptneo", "mlp_classifier"):
        overrides.append(f"model.pretrained={_tiny_pretrained(tmp_path)}")
    cfg = compose("train", overrides)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    if group in ("experiment", "sweep"):
        return
    node = cfg[group]
    if not enabled(node):
        return
    if group == "trainer" and node.accelerator == "gpu":
        import torch

        if not torch.cuda.is_available():
            pytest.skip("composes; instantiating a GPU trainer needs CUDA")
    if group == "model" and option == "mlp_classifier":
        obj = instantiate(node, num_features=8, num_classes=3, domain_names=["a"], _convert_="all")
        assert obj.num_parameters() > 0
    elif group == "model":
        obj = instantiate(node, vocab_size=300, domain_names=["a", "b"], _convert_="all")
        assert obj.num_parameters() > 0
    elif group == "logger":
        module = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}.get(option)
        if module is not None:
            pytest.importorskip(module, reason=f"logger={option} needs the `{option}` extra")
        obj = build_loggers(node, instantiate)
        # rnb's own history (metrics.csv) comes first, whichever tracker is chosen.
        assert obj and Path(obj[0].log_dir) == tmp_path / "logs"
    elif group == "data":
        obj = instantiate(node, _recursive_=False)
    else:
        obj = instantiate(node, _convert_="all")
    assert obj is not None


NESTED = sorted((p.parent.name, p.stem) for p in CONF.glob("regroup/*/*.yaml"))


@pytest.mark.parametrize(("group", "option"), NESTED, ids=[f"regroup/{g}/{o}" for g, o in NESTED])
def test_regroup_component_composes_and_instantiates(
    group: str, option: str, tmp_path: Path
) -> None:
    overrides = ["regroup=kmeans", f"regroup/{group}={option}", f"output_dir={tmp_path}"]
    if option == "precomputed":
        import numpy as np

        np.save(tmp_path / "e.npy", np.zeros((3, 4), np.float32))
        overrides.append(f"regroup.embedder.path={tmp_path / 'e.npy'}")
    cfg = compose("train", overrides)
    OmegaConf.to_container(cfg, resolve=True)
    obj = instantiate(cfg.regroup[group], _convert_="all")
    if group == "clusterer":  # a factory (`_partial_: true`): the sweep calls it per value
        obj = obj()
    method = {"embedder": "encode", "reducer": "fit_transform", "clusterer": "fit_predict"}[group]
    assert callable(getattr(obj, method))


@pytest.mark.parametrize("option", ["kmeans", "minibatch", "faiss", "hdbscan", "umap_hdbscan"])
def test_regroup_option_is_a_configured_regroup(option: str, tmp_path: Path) -> None:
    """Each sweep option instantiates a Regroup whose clusterer factory takes the swept key,
    and whose YAML keys are exactly Regroup's parameters (the defaults live in one place)."""
    import inspect

    from rnb.regroup.pipeline import Regroup

    cfg = compose("train", [f"regroup={option}", f"output_dir={tmp_path}"])
    regroup = instantiate(cfg.regroup, _convert_="all")
    assert isinstance(regroup, Regroup) and not regroup.keeps_predefined_domains
    assert regroup.cache_dir == Path(cfg.data.cache_dir)
    clusterer = regroup.clusterer(**{regroup.param: 5})
    assert getattr(clusterer, regroup.param) == 5
    params = inspect.signature(Regroup).parameters
    keys = {k for k in cfg.regroup if not k.startswith("_")}
    assert keys == set(params)


def test_regroup_yaml_values_are_the_signature_defaults(tmp_path: Path) -> None:
    """conf/regroup/kmeans.yaml (the paper's recipe) spells out Regroup's defaults."""
    import inspect

    from rnb.regroup.pipeline import Regroup

    cfg = compose("train", ["regroup=kmeans", f"output_dir={tmp_path}"])
    plain = OmegaConf.to_container(cfg.regroup, resolve=True)
    for name, p in inspect.signature(Regroup).parameters.items():
        if p.default is inspect.Parameter.empty or name in ("cache_dir", "seed"):
            continue
        expected = list(p.default) if isinstance(p.default, tuple) else p.default
        assert plain[name] == expected, name


def test_regroup_none_is_null(tmp_path: Path) -> None:
    cfg = compose("train", ["regroup=none", f"output_dir={tmp_path}"])
    assert cfg.regroup is None and not enabled(cfg.regroup)


def test_regroup_app_config_composes(tmp_path: Path) -> None:
    cfg = compose("regroup", [f"output_dir={tmp_path}"])
    OmegaConf.to_container(cfg, resolve=True)
    assert enabled(cfg.regroup) and "embedder" in cfg.regroup


def test_every_group_has_a_default_and_compose_is_complete(tmp_path: Path) -> None:
    cfg = compose("train", [f"output_dir={tmp_path}"])
    for key in ("data", "model", "strategy", "regroup", "trainer", "logger", "balance"):
        assert key in cfg
    assert cfg.trainer.use_distributed_sampler is False


PAPER = sorted(p.stem for p in CONF.glob("experiment/paper/*.yaml"))


@pytest.mark.parametrize("name", PAPER)
def test_paper_experiment_composes_and_resolves(name: str, tmp_path: Path) -> None:
    """conf/experiment/paper/* (a nested group the glob above misses), with the data paths
    a user must give set; the model, strategy and Regroup nodes instantiate (no weights
    are loaded: the pretrained model is only named)."""
    over = [f"experiment=paper/{name}", f"output_dir={tmp_path}"]
    over += ["data.train_path=train.jsonl", "data.eval_path=test.jsonl"]
    cfg = compose("train", over)
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.data.train_path == "train.jsonl" and cfg.model.pretrained
    assert cfg.data.tokenizer.name == cfg.model.pretrained
    assert instantiate(cfg.strategy, _convert_="all") is not None
    assert callable(instantiate(cfg.regroup, _convert_="all").clusterer)


SWEEPS = sorted(p.stem for p in CONF.glob("sweep/*.yaml"))


def _distinct_setups(name: str) -> list[list[str]]:
    """The sweep's jobs without their seed (a seed changes no config structure)."""
    seen: dict[str, list[str]] = {}
    for job in sweep_jobs(name):
        rest = [o for o in job if not o.startswith("seed=")]
        seen.setdefault(" ".join(rest), rest)
    return list(seen.values())


#: (sweep, base experiment): every sweep on the testbed; on a paper experiment, methods runs
#: by default (it swaps strategy and Regroup both) and the rest under `slow`.
SWEEP_CASES = [
    pytest.param(name, base, id=f"{name}-{base or 'testbed'}", marks=[pytest.mark.slow] * slow)
    for name in SWEEPS
    for base, slow in ((None, False), ("paper/dolly", name != "methods"))
]


@pytest.mark.parametrize(("name", "base"), SWEEP_CASES)
def test_every_sweep_job_composes_and_instantiates(
    name: str, base: str | None, tmp_path: Path
) -> None:
    """Each job of each packaged sweep, on the default testbed and on a paper experiment
    (whose Regroup keys must not break the sweep's regroup=none arm, nor its data the
    strategies), composes, resolves, and builds its strategy and Regroup."""
    import yaml

    from rnb.train import regroup_off_wins

    prefix = [f"output_dir={tmp_path}"] + ([f"experiment={base}"] if base else [])
    for job in _distinct_setups(name):
        cfg = regroup_off_wins(compose("train", [*prefix, f"sweep={name}", *job]))
        plain = OmegaConf.to_container(cfg, resolve=True)
        for key, value in (o.split("=", 1) for o in job):
            if key == "strategy":  # the shipped strategy + the job's own keys, nothing leaked
                own = tuple(o for o in job if o.startswith("strategy."))
                assert plain["strategy"] == _strategy_node(value, own), job
            elif key == "regroup":
                assert (plain["regroup"] is None) == (value == "none"), job
            else:  # a swept key reaches the job's config
                assert OmegaConf.select(OmegaConf.create(plain), key) == yaml.safe_load(value)
        assert instantiate(cfg.strategy, _convert_="all") is not None
        if cfg.regroup is not None:
            assert callable(instantiate(cfg.regroup, _convert_="all").clusterer)


@functools.cache
def _strategy_node(option: str, keys: tuple[str, ...]) -> dict:
    cfg = compose("train", [f"strategy={option}", *keys])
    return OmegaConf.to_container(cfg.strategy, resolve=True)


def test_sweep_grids() -> None:
    """The grids the README promises; methods covers every shipped strategy that runs alone."""
    sizes = {n: len(sweep_jobs(n)) for n in SWEEPS}
    assert sizes == {"methods": 60, "k_sweep": 24, "ablation_regroup": 30, "lambda": 18}
    shipped = {p.stem for p in CONF.glob("strategy/*.yaml")}
    in_methods = set(sweep_params("methods")["strategy"].split(","))
    assert in_methods == shipped - {"static", "doremi"}  # these need another run first
    assert sweep_params("methods")["regroup"] == sweep_params("ablation_regroup")["regroup"]
    assert set(sweep_params("ablation_regroup")["strategy"].split(",")) <= in_methods
    for name in ("k_sweep", "lambda"):  # R&B on regrouped domains, fixed in the defaults
        cfg = compose("train", [f"sweep={name}", "output_dir=x"])
        assert cfg.strategy._target_.endswith(".RnB") and cfg.regroup.clusterer is not None
