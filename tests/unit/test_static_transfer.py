"""``static`` weights keyed by domain name must match the run's domains (``strategy.fill``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rnb.balance.strategies.base import MixtureContext
from rnb.balance.strategies.static import Static

FIELD = MixtureContext.domain_definition("source", None)


def _ctx(names: list[str], fingerprint: str | None = FIELD) -> MixtureContext:
    m = len(names)
    return MixtureContext(names, np.ones(m), np.full(m, 1 / m), domain_fingerprint=fingerprint)


def _weights(strategy: Static, names: list[str], fingerprint: str | None = FIELD) -> np.ndarray:
    strategy.setup(_ctx(names, fingerprint))
    return strategy.initial_weights()


def _summary(
    path: Path,
    names: list[str],
    weights: list[float],
    regroup_fp: str | None = None,
    **extra: object,
) -> str:
    body = {
        "status": "completed",
        "domains": names,
        "weights_trajectory": [
            {"step": 0, "weights": [1 / len(names)] * len(names)},
            {"step": 10, "weights": weights},
        ],
        "regroup": {"fingerprint": regroup_fp} if regroup_fp else None,
        "config": {"data": {"domain_field": None if regroup_fp else "source"}},
        **extra,
    }
    path.write_text(json.dumps(body))
    return str(path)


def test_two_domain_run_applied_to_three_domains(tmp_path: Path) -> None:
    """The reproducer: the new domain used to get weight 0 silently."""
    src = _summary(tmp_path / "summary.json", ["a", "b"], [0.25, 0.75])
    with pytest.raises(ValueError) as info:
        _weights(Static(from_summary=src), ["a", "b", "c"])
    text = str(info.value)
    assert f"strategy.from_summary='{src}'" in text
    assert "missing ['c']" in text and "extra []" in text and "strategy.fill=uniform" in text

    zero = Static(from_summary=src, fill="zero")
    np.testing.assert_allclose(_weights(zero, ["a", "b", "c"]), [0.25, 0.75, 0.0])
    assert zero.describe()["transfer"]["filled"] == {"c": 0.0}

    uniform = Static(from_summary=src, fill="uniform")
    # c gets 1/3; a and b share the other 2/3 in their 1:3 ratio.
    np.testing.assert_allclose(_weights(uniform, ["a", "b", "c"]), [1 / 6, 1 / 2, 1 / 3])
    record = uniform.describe()["transfer"]
    assert record["fill"] == "uniform" and record["missing"] == ["c"] and record["extra"] == []
    assert record["filled"] == {"c": pytest.approx(1 / 3)}
    assert record["fingerprint"] == {"source": FIELD, "run": FIELD}


def test_extra_domains_are_dropped_and_renormalised(tmp_path: Path) -> None:
    src = _summary(tmp_path / "summary.json", ["a", "b", "z"], [0.2, 0.2, 0.6])
    with pytest.raises(ValueError, match=r"missing \[\] .*extra \['z'\]"):
        _weights(Static(from_summary=src), ["a", "b"])
    zero = Static(from_summary=src, fill="zero")
    np.testing.assert_allclose(_weights(zero, ["a", "b"]), [0.5, 0.5])
    record = zero.describe()["transfer"]
    assert record["dropped_weight"] == pytest.approx(0.6)
    assert record["sum_given"] == pytest.approx(1.0)
    assert record["sum_matched"] == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("fill", "expected"),
    [("zero", [0.25, 0.75, 0.0]), ("uniform", [1 / 6, 1 / 2, 1 / 3])],
)
def test_mapping_weights_follow_the_same_policy(fill: str, expected: list[float]) -> None:
    weights = {"a": 1.0, "b": 3.0, "z": 4.0}
    with pytest.raises(ValueError, match=r"strategy.weights: .*missing \['c'\].*extra \['z'\]"):
        _weights(Static(weights), ["a", "b", "c"])
    np.testing.assert_allclose(_weights(Static(weights, fill=fill), ["a", "b", "c"]), expected)


def test_regroup_k16_weights_on_a_k20_run(tmp_path: Path) -> None:
    k16 = [f"c{i:02d}" for i in range(16)]
    k20 = [f"c{i:02d}" for i in range(20)]
    src = _summary(tmp_path / "summary.json", k16, [1 / 16] * 16, regroup_fp="aaa")
    with pytest.raises(ValueError) as info:
        _weights(Static(from_summary=src, fill="zero"), k20, "regroup:bbb")
    text = str(info.value)
    assert "defined by regroup:aaa, this run's by regroup:bbb" in text
    assert "strategy.check_fingerprint=false" in text
    with pytest.raises(ValueError) as info:
        _weights(Static(from_summary=src), k20, "regroup:bbb")
    assert "regroup:aaa" in str(info.value)  # both problems in one message
    assert "missing ['c16', 'c17', 'c18', 'c19']" in str(info.value)


def test_same_names_from_another_clustering(tmp_path: Path) -> None:
    """Two Regroup runs both named c00..c15 are different domains unless fingerprints agree."""
    names = [f"c{i:02d}" for i in range(16)]
    w = list(np.arange(1, 17) / np.arange(1, 17).sum())
    src = _summary(tmp_path / "summary.json", names, w, regroup_fp="aaa")
    with pytest.raises(ValueError, match="different Regroup clustering"):
        _weights(Static(from_summary=src), names, "regroup:bbb")
    np.testing.assert_allclose(_weights(Static(from_summary=src), names, "regroup:aaa"), w)
    anyway = Static(from_summary=src, check_fingerprint=False)
    np.testing.assert_allclose(_weights(anyway, names, "regroup:bbb"), w)
    assert anyway.describe()["transfer"]["fingerprint"] == {
        "source": "regroup:aaa",
        "run": "regroup:bbb",
    }
    # Predefined domains vs Regroup clusters that happen to share the names.
    with pytest.raises(ValueError, match="data.domain_field=source"):
        _weights(Static(from_summary=src), names, FIELD)


def test_weights_of_a_diverged_run_are_refused(tmp_path: Path) -> None:
    failure = {"step": 3, "reason": "non-finite training loss"}
    src = _summary(tmp_path / "s.json", ["a"], [1.0], status="diverged", failure=failure)
    with pytest.raises(ValueError, match="diverged at step 3 .*completed run"):
        _weights(Static(from_summary=src), ["a"])


def test_options_that_cannot_apply_are_refused() -> None:
    with pytest.raises(ValueError, match=r"strategy.fill must be one of \['error', 'zero'"):
        Static({"a": 1.0}, fill="mean")
    with pytest.raises(ValueError, match="strategy.fill=zero applies to weights keyed"):
        Static([1.0, 2.0], fill="zero")
    with pytest.raises(ValueError, match="check_fingerprint applies only"):
        Static({"a": 1.0}, check_fingerprint=False)


def test_fingerprint_check_needs_both_sides_and_logs_a_forced_transfer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    names, w = ["a", "b"], [0.25, 0.75]
    src = _summary(tmp_path / "summary.json", names, w, regroup_fp="aaa")
    # Unknown on one side (a run without a fingerprint): nothing to compare, no refusal.
    np.testing.assert_allclose(_weights(Static(from_summary=src), names, None), w)
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"domains": names, "weights_trajectory": [{"weights": w}]}))
    np.testing.assert_allclose(_weights(Static(from_summary=str(plain)), names, "regroup:b"), w)
    differ = (
        "its domains were defined by regroup:aaa, this run's by regroup:bbb (a different "
        "Regroup clustering or data.domain_field: equal names need not mean equal domains)"
    )
    with pytest.raises(ValueError) as info:
        _weights(Static(from_summary=src), names, "regroup:bbb")
    assert str(info.value) == (
        f"strategy.from_summary='{src}': {differ}; use a source run with the same regroup / "
        "data config, or set strategy.check_fingerprint=false to transfer by name anyway"
    )
    with caplog.at_level("WARNING", logger="rnb.balance.strategies.static"):
        _weights(Static(from_summary=src, check_fingerprint=False), names, "regroup:bbb")
    assert caplog.messages == [f"{differ}; transferring by name (strategy.check_fingerprint=false)"]


def test_summary_with_only_a_regroup_fingerprint_is_checked(tmp_path: Path) -> None:
    body = {"domains": ["a", "b"], "weights_trajectory": [{"weights": [0.5, 0.5]}],
            "regroup": {"fingerprint": "aaa"}}  # fmt: skip
    (tmp_path / "s.json").write_text(json.dumps(body))
    src = str(tmp_path / "s.json")
    with pytest.raises(ValueError, match="defined by regroup:aaa, this run's by regroup:bbb"):
        _weights(Static(from_summary=src), ["a", "b"], "regroup:bbb")
    np.testing.assert_allclose(_weights(Static(from_summary=src), ["a", "b"], "regroup:aaa"), 0.5)


def test_summary_with_fewer_weights_than_domains_is_refused(tmp_path: Path) -> None:
    body = {"domains": ["a", "b", "c"], "weights_trajectory": [{"weights": [0.5, 0.5]}]}
    (tmp_path / "s.json").write_text(json.dumps(body))
    with pytest.raises(ValueError):  # never paired up silently
        _weights(Static(from_summary=str(tmp_path / "s.json"), fill="zero"), ["a", "b"])


def test_uniform_fill_when_every_matched_weight_is_zero() -> None:
    s = Static({"a": 0.0, "z": 1.0}, fill="uniform")
    np.testing.assert_array_equal(_weights(s, ["a", "b"]), [0.0, 1.0])
    assert s.describe()["transfer"]["filled"] == {"b": 0.5}


def test_mismatch_message_and_fill_warning_texts(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError) as info:
        _weights(Static({"a": 1.0, "z": 1.0}), ["a", "b"])
    assert str(info.value) == (
        "strategy.weights: the weights do not match this run's domains: missing ['b'] (domains "
        "of this run without a weight), extra ['z'] (weighted domains this run lacks); this "
        "run's domains are ['a', 'b']. Set strategy.fill=zero (missing domains get 0) or "
        "strategy.fill=uniform (each missing domain gets 1/m) to transfer anyway"
    )
    with caplog.at_level("WARNING", logger="rnb.balance.strategies.static"):
        _weights(Static({"a": 1.0, "z": 1.0}, fill="zero"), ["a", "b"])
        _weights(Static({"a": 1.0, "z": 0.25}, fill="uniform"), ["a", "b", "c"])
    assert caplog.messages == [
        "strategy.weights: strategy.fill=zero: missing domains ['b'] get 0; extra domains "
        "['z'] dropped (weight 1); the rest renormalised",
        "strategy.weights: strategy.fill=uniform: missing domains ['b', 'c'] get 1/m = 0.3333; "
        "extra domains ['z'] dropped (weight 0.25); the rest renormalised",
    ]


def test_static_refusals_and_records_are_exact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValueError) as info:
        Static([1.0, 2.0], fill="zero")
    assert str(info.value) == (
        "strategy.fill=zero applies to weights keyed by domain ({domain: weight} or "
        "strategy.from_summary); a list needs one weight per domain, in domain order"
    )
    for kw in ({"weights": [1.0]}, {"weights": [1.0], "from_summary": "s.json"}):
        with pytest.raises(ValueError) as info:
            Static(**kw, check_fingerprint=False)
        assert str(info.value) == "strategy.check_fingerprint applies only to strategy.from_summary"
    listed = Static([1, 1, 2])
    assert listed.describe()["transfer"] == {}  # nothing matched yet
    with caplog.at_level("INFO", logger="rnb.balance.strategies.static"):
        _weights(listed, ["a", "b", "c"])
        _weights(Static([0.25, 0.25, 0.5]), ["a", "b", "c"])  # sums to 1: nothing to say
    assert listed.describe()["transfer"] == {
        "source": "strategy.weights", "fill": "error", "sum_given": 4.0, "sum_matched": 4.0
    }  # fmt: skip
    assert caplog.messages == ["strategy.weights: weights sum to 4; renormalised to 1"]
    failure = {"step": 3, "reason": "non-finite training loss"}
    src = _summary(tmp_path / "d.json", ["a"], [1.0], status="diverged", failure=failure)
    with pytest.raises(ValueError) as info:
        _weights(Static(from_summary=src), ["a"])
    assert str(info.value) == (
        f"strategy.from_summary='{src}': that run diverged at step 3 (non-finite training "
        "loss); its weights are no result: point strategy.from_summary at a completed run"
    )
    k2 = _summary(tmp_path / "k2.json", ["c00", "c01"], [0.5, 0.5], regroup_fp="aaa")
    with pytest.raises(ValueError) as info:
        _weights(Static(from_summary=k2), ["c00"], "regroup:bbb")
    # both problems, joined by "; ": the fingerprint first, then the name mismatch
    assert "transfer by name anyway; the weights do not match this run's domains: missing []" in (
        str(info.value)
    )


def test_damaged_summary_with_short_weights_names_the_file(tmp_path: Path) -> None:
    """A trajectory entry with fewer weights than domains: an error naming the file."""
    path = tmp_path / "summary.json"
    summary = {
        "status": "completed",
        "domains": ["a", "b", "c"],
        "weights_trajectory": [{"step": 0, "weights": [0.5, 0.5]}],
    }
    path.write_text(json.dumps(summary))
    with pytest.raises(ValueError) as err:
        _weights(Static(from_summary=str(path)), ["a", "b", "c"])
    assert str(path) in str(err.value)
    assert "weights_trajectory has 2 weights for 3 domains" in str(err.value)
