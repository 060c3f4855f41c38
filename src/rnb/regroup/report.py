"""Human-readable report of a Regroup run: what the clusters are and why this k.

``build_report`` returns a JSON-serialisable dict; ``write_report`` saves it as
``regroup.json`` plus a Markdown summary ``regroup.md``.

Distinguishing terms use class-based TF-IDF (c-TF-IDF, the BERTopic formula, own
implementation): all texts of a cluster form one document; for term ``t`` and cluster
``c``, ``w(t, c) = tf(t, c) * log(1 + A / f(t))`` where ``tf(t, c)`` is the count of ``t``
in ``c`` divided by the number of words in ``c`` (L1-normalised, so big clusters do not
dominate), ``f(t)`` the count of ``t`` over all clusters and ``A`` the average number of
words per cluster.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from rnb.regroup.advice import advise_rows
from rnb.regroup.assign import Assignment, distance_to_own_centroid
from rnb.regroup.postprocess import centroids as compute_centroids
from rnb.regroup.selection import SweepResult
from rnb.report.markdown import md_cell, md_table

__all__ = ["build_report", "c_tf_idf", "write_report"]

_MAX_EXAMPLE_CHARS = 300


def c_tf_idf(
    texts: Sequence[str], labels: np.ndarray, k: int, stop_words: str | None = "english"
) -> tuple[np.ndarray, list[str]]:
    """Class-based TF-IDF weights (see module docstring for the formula).

    Args:
        texts: one text per example.
        labels: ``[n]`` cluster ids in ``0..k-1``.
        k: number of clusters.
        stop_words: passed to sklearn's ``CountVectorizer`` (tokenisation only).

    Returns:
        ``(weights [k, V], vocabulary)``; ``V = 0`` when no text has a usable word.
    """
    vec = CountVectorizer(stop_words=stop_words)
    try:
        counts = vec.fit_transform(list(texts))  # [n, V] sparse
    except ValueError:  # empty vocabulary (all texts empty or stop words)
        return np.zeros((k, 0)), []
    n = len(texts)
    onehot = sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
    per_class = np.asarray((onehot @ counts).todense(), dtype=np.float64)  # [k, V]
    words = per_class.sum(axis=1, keepdims=True)
    tf = np.divide(per_class, words, out=np.zeros_like(per_class), where=words > 0)
    avg_words = per_class.sum() / k
    f_t = per_class.sum(axis=0)
    idf = np.log1p(avg_words / np.maximum(f_t, 1.0))
    return tf * idf[None, :], [str(t) for t in vec.get_feature_names_out()]


def _clean(obj: Any) -> Any:
    """Recursively turn numpy scalars/arrays into JSON types; NaN/inf -> None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _representatives(
    texts: Sequence[str],
    labels: np.ndarray,
    k: int,
    n_examples: int,
    embeddings: np.ndarray | None,
    seed: int,
) -> list[list[int]]:
    """Indices of each cluster's examples: closest to centroid, else a seeded order."""
    if embeddings is not None:
        C = compute_centroids(embeddings, labels, k)
        key = distance_to_own_centroid(embeddings, labels, np.nan_to_num(C))
    else:
        key = np.random.default_rng(seed).permutation(len(texts)).astype(np.float64)
    order = np.lexsort((np.arange(len(labels)), key, labels))  # by cluster, then key, then index
    bounds = np.searchsorted(labels[order], np.arange(k + 1))
    return [order[bounds[c] : bounds[c] + n_examples].tolist() for c in range(k)]


def _selection(sweep: SweepResult) -> dict[str, Any]:
    d = sweep.to_dict()
    ch, ru = d["chosen"], d["runner_up"]
    better = "highest" if d["higher_is_better"] else "lowest"
    why = f"{sweep.param}={ch['value']} (k={ch['k']}) has the {better} {sweep.metric}"
    if ch["score"] is not None:
        why += f" ({ch['score']:.4g})"
    if ru is not None and ru["score"] is not None:
        why += f"; runner-up {sweep.param}={ru['value']} (k={ru['k']}) with {ru['score']:.4g}"
    d["why"] = why
    advice = advise_rows(d["rows"], ch["value"], param=sweep.param, metric=sweep.metric)
    d["advice"] = advice.to_dict() if advice is not None and advice.flagged else None
    return d


def build_report(
    texts_train: Sequence[str],
    labels_train: np.ndarray,
    labels_eval: np.ndarray,
    *,
    domains_train: Sequence[Any] | None = None,
    reference_train: Sequence[Any] | None = None,
    sweep: SweepResult | None = None,
    assignment: Assignment | None = None,
    embeddings_train: np.ndarray | None = None,
    top_terms: int = 8,
    n_examples: int = 3,
    seed: int = 0,
    stop_words: str | None = "english",
) -> dict[str, Any]:
    """Summarise a regrouping.

    Args:
        texts_train: training texts (for terms and examples).
        labels_train: ``[n_train]`` final training labels in ``0..k-1``.
        labels_eval: ``[n_eval]`` eval labels (nearest training centroid).
        domains_train: predefined domain per training example (contingency table).
        reference_train: ground-truth grouping, if any (ARI/NMI).
        sweep: the k sweep (chosen k, metric, runner-up, all rows).
        assignment: eval assignment (OOD counts).
        embeddings_train: ``[n_train, d]``; representative examples are then the ones
            closest to their centroid, else the first ``n_examples`` in a seeded order.
        top_terms: distinguishing terms per cluster.
        n_examples: representative examples per cluster.
        seed: seed of the example order when no embeddings are given.
        stop_words: stop-word list for c-TF-IDF tokenisation (None keeps all words).

    Returns:
        A JSON-serialisable dict (keys: n_train, n_eval, k, selection, clusters,
        contingency, agreement, ood).
    """
    lab = np.asarray(labels_train, dtype=np.int64)
    lab_eval = np.asarray(labels_eval, dtype=np.int64).reshape(-1)
    n, n_eval = len(lab), len(lab_eval)
    if len(texts_train) != n:
        raise ValueError(f"data.embed_fields: {len(texts_train)} texts for {n} training labels")
    if n == 0 or lab.min() < 0 or (n_eval and lab_eval.min() < 0):
        raise ValueError("regroup.noise_policy: need non-empty train labels and all labels >= 0")
    k = int(max(lab.max(), lab_eval.max() if n_eval else 0)) + 1
    sizes = np.bincount(lab, minlength=k)
    eval_sizes = np.bincount(lab_eval, minlength=k)
    weights, vocab = c_tf_idf(texts_train, lab, k, stop_words)
    reps = _representatives(texts_train, lab, k, n_examples, embeddings_train, seed)
    ood_per = (
        np.bincount(lab_eval[assignment.ood_mask], minlength=k) if assignment is not None else None
    )
    clusters = []
    for c in range(k):
        top = np.argsort(-weights[c], kind="stable")[:top_terms] if vocab else []
        clusters.append(
            {
                "id": c,
                "size": int(sizes[c]),
                "share_train": sizes[c] / n,
                "n_eval": int(eval_sizes[c]),
                "share_eval": eval_sizes[c] / n_eval if n_eval else None,
                "n_ood_eval": int(ood_per[c]) if ood_per is not None else None,
                "top_terms": [
                    {"term": vocab[t], "score": float(weights[c, t])}
                    for t in top
                    if weights[c, t] > 0
                ],
                "examples": [str(texts_train[i])[:_MAX_EXAMPLE_CHARS] for i in reps[c]],
            }
        )
    report: dict[str, Any] = {
        "n_train": n,
        "n_eval": n_eval,
        "k": k,
        "selection": _selection(sweep) if sweep is not None else None,
        "clusters": clusters,
        "contingency": None,
        "agreement": None,
        "ood": None,
    }
    if domains_train is not None:
        dom = np.asarray([str(d) for d in domains_train])
        if len(dom) != n:
            raise ValueError(f"data.domain_field: {len(dom)} domains for {n} training labels")
        names, codes = np.unique(dom, return_inverse=True)
        table = np.zeros((k, len(names)), dtype=np.int64)
        np.add.at(table, (lab, codes.reshape(-1)), 1)
        report["contingency"] = {"domains": names.tolist(), "counts": table}
    if reference_train is not None:
        ref = np.asarray([str(r) for r in reference_train])
        if len(ref) != n:
            raise ValueError(f"data.reference_field: {len(ref)} reference labels for {n} examples")
        agree = {"clusters_vs_reference": _agreement(lab, ref)}
        if domains_train is not None:
            agree["domains_vs_reference"] = _agreement(np.asarray(dom), ref)
        report["agreement"] = agree
    if assignment is not None:
        report["ood"] = {
            "count": assignment.n_ood,
            "share": assignment.n_ood / n_eval if n_eval else None,
            "quantile": assignment.ood_quantile,
            "radius": assignment.radius,
        }
    return _clean(report)


def _agreement(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    return {
        "ari": float(adjusted_rand_score(ref, pred)),
        "nmi": float(normalized_mutual_info_score(ref, pred)),
    }


def _markdown(r: dict[str, Any]) -> str:
    md = ["# Regroup report", ""]
    md.append(
        f"{r['n_train']} training / {r['n_eval']} eval examples in **k = {r['k']}** clusters."
    )
    md.append("")
    sel = r["selection"]
    if sel is not None:
        md += ["## Choice of k", "", sel["why"] + ".", ""]
        fs = r.get("fit_sample")
        if fs and fs["size"] >= fs["n_train"]:  # a fit_sample of at least every point
            md += [
                f"regroup.fit_sample={fs['requested']} >= {fs['n_train']} training examples: "
                "fitted on every example.",
                "",
            ]
        elif fs:  # regroup.fit_sample: the sweep table describes the sample
            md += [
                f"Fitted on a seeded sample of {fs['size']} of {fs['n_train']} training "
                f"examples (seed {fs['seed']}), then every example labelled by "
                f"{fs['assignment']}; the sweep scores and sizes are the sample's.",
                "",
            ]
        if sel.get("advice"):
            md += [f"**Note:** {sel['advice']['message']}", ""]
        hdr = [
            sel["param"],
            "k found",
            "silhouette",
            "davies_bouldin",
            "calinski_harabasz",
            "fit s",
            "excluded (why)",
        ]
        rows = [
            [
                f"**{row['value']}**" if i == sel["chosen_index"] else row["value"],
                row["k_found"],
                row["silhouette"],
                row["davies_bouldin"],
                row["calinski_harabasz"],
                row["fit_seconds"],
                row.get("excluded") or "",
            ]
            for i, row in enumerate(sel["rows"])
        ]
        md += md_table(hdr, rows)
    md += ["## Clusters", ""]
    hdr = ["id", "size", "share train", "share eval", "OOD eval", "top terms"]
    rows = [
        [
            c["id"],
            c["size"],
            c["share_train"],
            c["share_eval"],
            c["n_ood_eval"],
            ", ".join(t["term"] for t in c["top_terms"]),
        ]
        for c in r["clusters"]
    ]
    md += md_table(hdr, rows)
    md += ["### Representative examples", ""]
    for c in r["clusters"]:
        md.append(f"**Cluster {c['id']}**")
        md += [f"- {md_cell(e)}" for e in c["examples"]] or ["- (none)"]
        md.append("")
    if r["contingency"] is not None:
        md += ["## Clusters vs predefined domains", ""]
        ct = r["contingency"]
        md += md_table(
            ["cluster", *ct["domains"]], [[i, *row] for i, row in enumerate(ct["counts"])]
        )
    if r["agreement"] is not None:
        md += ["## Agreement with the reference grouping", ""]
        md += md_table(
            ["grouping", "ARI", "NMI"], [[k, v["ari"], v["nmi"]] for k, v in r["agreement"].items()]
        )
    if r["ood"] is not None:
        o = r["ood"]
        md += ["## Out-of-distribution eval points", ""]
        md.append(
            f"{o['count']} eval points ({md_cell(o['share'])}) lie farther from their centroid than "
            f"the {o['quantile']} quantile of that cluster's training distances."
        )
        md.append("")
    return "\n".join(md)


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``regroup.json`` and ``regroup.md`` into ``out_dir``.

    Returns:
        ``(json_path, markdown_path)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jp, mp = out / "regroup.json", out / "regroup.md"
    jp.write_text(json.dumps(_clean(report), indent=2, allow_nan=False), encoding="utf-8")
    mp.write_text(_markdown(report), encoding="utf-8")
    return jp, mp
