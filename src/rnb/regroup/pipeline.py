"""Regroup end to end: embed → reduce → sweep k → pick → assign eval → report, cached.

The result of a configuration is cached under ``<cache_dir>/regroup/<fingerprint>/``
where the fingerprint covers the train and eval texts, the embedder, reducer, clusterer
and sweep settings and the seed; a rerun (or another DDP rank) only loads the labels.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rnb.data.labels import DomainLabels
from rnb.data.sources import build_texts, column
from rnb.regroup.cache import EmbeddingCache, fingerprint_array, fingerprint_texts, make_key

__all__ = ["RegroupResult", "regroup_labels", "run_regroup"]

_CACHE_VERSION = "regroup-v1"


@dataclass
class RegroupResult:
    """Labels of a regrouping plus its report and summary."""

    labels: DomainLabels
    summary: dict[str, Any]
    report: dict[str, Any]
    fingerprint: str


def _cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _embed(
    embedder: Any, train: list[dict], ev: list[dict], texts: list[str], ev_texts: list[str],
    cache: EmbeddingCache, chunk: int,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    from rnb.regroup.precomputed import PrecomputedEmbedder

    if isinstance(embedder, PrecomputedEmbedder):
        if embedder.column is not None:
            return embedder.from_records(train), embedder.from_records(ev)
        if embedder.eval_path is None:
            raise ValueError("embedder.eval_path: precomputed file embeddings need eval rows too")
        return embedder.encode(texts), embedder.encode_eval(ev_texts)
    emb_fp = embedder.fingerprint()
    X = cache.get_or_compute(make_key(fingerprint_texts(texts), emb_fp), texts, embedder, chunk)
    Xe = cache.get_or_compute(
        make_key(fingerprint_texts(ev_texts), emb_fp), ev_texts, embedder, chunk
    )
    return np.asarray(X), np.asarray(Xe)


def _fingerprint(
    cfg: Any, embedder: Any, train: list[dict], ev: list[dict], texts: list[str],
    ev_texts: list[str], seed: int, domain_field: str | None,
) -> str:  # fmt: skip
    from rnb.regroup.precomputed import PrecomputedEmbedder

    if isinstance(embedder, PrecomputedEmbedder) and embedder.column is not None:
        data = [
            fingerprint_array(embedder.from_records(train)),
            fingerprint_array(embedder.from_records(ev)),
        ]
    else:
        data = [fingerprint_texts(texts), fingerprint_texts(ev_texts)]
    if hasattr(embedder, "fit") and not getattr(embedder, "is_fitted", True):
        embedder.fit(texts)  # corpus-dependent embedders: the fit is part of the key
    settings = {
        k: _plain(cfg.get(k))
        for k in cfg
        if k not in ("embedder", "enabled", "report", "embed_chunk_size")
    }
    parts = [_CACHE_VERSION, *data, embedder.fingerprint(), json.dumps(settings, sort_keys=True)]
    return make_key(*parts, str(seed), str(domain_field))[:20]


def run_regroup(
    cfg: Any,
    train: list[dict],
    ev: list[dict],
    *,
    text_fields: Any,
    domain_field: str | None = None,
    reference_field: str | None = None,
    cache_dir: str | Path = ".rnb_cache",
    out_dir: str | Path | None = None,
    seed: int = 0,
) -> RegroupResult:
    """Run (or load from cache) the Regroup stage.

    Args:
        cfg: the ``regroup`` config node (embedder, reducer, clusterer, sweep settings).
        train: training records.
        ev: evaluation records.
        text_fields: fields embedded (``regroup.text_fields`` overrides ``data.text_fields``).
        domain_field: predefined domains (contingency table; ``clusterer=original``).
        reference_field: latent labels for ARI/NMI.
        cache_dir: embedding and label cache.
        out_dir: where ``regroup.json``, ``regroup.md``, ``regroup_sweep.json``/``.png`` go.
        seed: drives clustering and the silhouette sample.
    """
    if not ev:
        raise ValueError("the eval split is empty: set data.eval_path or data.eval_fraction")
    fields = _plain(_cfg_get(cfg, "text_fields", text_fields))
    texts, ev_texts = build_texts(train, fields), build_texts(ev, fields)
    embedder = instantiate(cfg.embedder, _convert_="all")
    fp = _fingerprint(cfg, embedder, train, ev, texts, ev_texts, seed, domain_field)
    folder = Path(cache_dir) / "regroup" / fp
    if not (folder / "labels.npz").exists():
        _compute(cfg, embedder, train, ev, texts, ev_texts, folder, seed, domain_field, reference_field, cache_dir)  # fmt: skip
    data = np.load(folder / "labels.npz")
    report = json.loads((folder / "regroup.json").read_text())
    names = list(json.loads((folder / "names.json").read_text()))
    labels = DomainLabels(names, data["train"], data["eval"])
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for f in folder.iterdir():
            if f.name.startswith("regroup") or f.name.startswith("sweep"):
                shutil.copy2(
                    f, out / (f.name if f.name.startswith("regroup") else f"regroup_{f.name}")
                )
    sel = report.get("selection") or {}
    summary = {
        "k": len(names),
        "fingerprint": fp,
        "param": sel.get("param"),
        "metric": sel.get("metric"),
        "chosen": sel.get("chosen"),
        "why": sel.get("why"),
        "scores": [
            {
                key: r.get(key)
                for key in (
                    "value",
                    "k_found",
                    "silhouette",
                    "davies_bouldin",
                    "calinski_harabasz",
                    "excluded",
                )
            }
            for r in sel.get("rows", [])
        ],
        "agreement": report.get("agreement"),
        "ood_eval": (report.get("ood") or {}).get("count"),
        "cache": str(folder),
    }
    return RegroupResult(labels, summary, report, fp)


def _compute(
    cfg: Any, embedder: Any, train: list[dict], ev: list[dict], texts: list[str],
    ev_texts: list[str], folder: Path, seed: int, domain_field: str | None,
    reference_field: str | None, cache_dir: str | Path,
) -> None:  # fmt: skip
    from rnb.regroup.assign import assign_to_centroids
    from rnb.regroup.clusterers import OriginalDomains
    from rnb.regroup.postprocess import centroids
    from rnb.regroup.report import build_report, write_report
    from rnb.regroup.selection import sweep

    cache = EmbeddingCache(cache_dir)
    X, Xe = _embed(
        embedder, train, ev, texts, ev_texts, cache, int(_cfg_get(cfg, "embed_chunk_size", 8192))
    )
    reducer = instantiate(cfg.reducer, _convert_="all")
    Xr = np.asarray(reducer.fit_transform(X), dtype=np.float32)
    Xer = np.asarray(reducer.transform(Xe), dtype=np.float32)
    domains = column(train, domain_field, "data.domain_field") if domain_field else None
    clusterer = instantiate(cfg.clusterer, _convert_="all")
    result = None
    if isinstance(clusterer, OriginalDomains):
        if domains is None:
            raise ValueError("regroup=original needs data.domain_field (the predefined domains)")
        names = sorted(set(domains))
        labels = np.array([names.index(d) for d in domains], dtype=np.int64)
        ev_dom = column(ev, domain_field, "data.domain_field")
        unknown = sorted(set(ev_dom) - set(names))
        if unknown:
            raise ValueError(f"data.domain_field: eval domains {unknown} have no training examples")
        centers = centroids(Xr, labels, len(names))
    else:
        param = str(_cfg_get(cfg, "param", "n_clusters"))
        values = _plain(cfg.k_values)

        def factory(value: int) -> Any:
            return instantiate(cfg.clusterer, _convert_="all", **{param: int(value)})

        result = sweep(
            Xr, factory, values, param=param,
            metric=str(_cfg_get(cfg, "metric", "silhouette")),
            silhouette_sample=_cfg_get(cfg, "silhouette_sample", 10000),
            silhouette_metric=str(_cfg_get(cfg, "silhouette_metric", "euclidean")),
            seed=seed,
            min_cluster_size=int(_cfg_get(cfg, "min_cluster_size", 1)),
            noise_policy=str(_cfg_get(cfg, "noise_policy", "nearest")),
        )  # fmt: skip
        labels, centers = np.asarray(result.labels), np.asarray(result.centers)
        names = [f"c{i:02d}" for i in range(int(labels.max()) + 1)]
    assignment = assign_to_centroids(
        Xer, centers, Xr, labels, ood_quantile=float(_cfg_get(cfg, "ood_quantile", 0.99))
    )
    reference = column(train, reference_field, "data.reference_field") if reference_field else None
    report = build_report(
        texts, labels, assignment.labels, domains_train=domains, reference_train=reference,
        sweep=result, assignment=assignment, embeddings_train=Xr, seed=seed,
    )  # fmt: skip
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.savez(tmp / "labels.npz", train=labels, eval=assignment.labels, eval_distance=assignment.distances, eval_ood=assignment.ood_mask)  # fmt: skip
    (tmp / "names.json").write_text(json.dumps(names))
    write_report(report, tmp)
    if result is not None:
        result.to_json(tmp / "sweep.json")
        result.plot(tmp / "sweep.png")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)


def regroup_labels(
    dm: Any, train: list[dict], ev: list[dict]
) -> tuple[DomainLabels, dict[str, Any]]:
    """DataModule hook: Regroup with the DataModule's data settings."""
    result = run_regroup(
        dm.regroup_cfg,
        train,
        ev,
        text_fields=dm.embed_fields or dm.text_fields,
        domain_field=dm.domain_field,
        reference_field=dm.reference_field,
        cache_dir=dm.cache_dir,
        out_dir=dm.output_dir,
        seed=dm.seed,
    )
    dm.regroup_fingerprint = result.fingerprint
    return result.labels, result.summary
