"""Tests for the built-in synthetic testbed ``rnb.data.synthetic``."""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from datetime import datetime

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.neighbors import NearestCentroid

from rnb.data.synthetic import (
    CATEGORIES,
    DEFAULT_EVAL_FOCUS,
    NOISE_SKILLS,
    SKILLS,
    SyntheticConfig,
    generate,
    skill_proportions,
)

KEYS = {"prompt", "response", "domain", "reference"}


@pytest.fixture(scope="module")
def data() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    return generate(SyntheticConfig(n_train=8000, n_eval=2000, seed=7))


def _by_skill(records: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in records:
        out[r["reference"]].append(r)
    return out


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


# --- Independent reference answers, parsed back out of the prompt text -------------------

_UNITS = {
    "kilometres": 1000, "kilograms": 1000, "litres": 1000, "hours": 60,
    "minutes": 60, "days": 24, "weeks": 7, "feet": 12,
}  # fmt: skip
_SMALL = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
]  # fmt: skip
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _ints(p: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", p)]


def _quoted(p: str) -> list[str]:
    return re.findall(r"'([^']*)'", p)


def _word_value(w: str) -> int:
    parts = w.split("-")
    value = _SMALL.index(parts[0]) if parts[0] in _SMALL else 20 + 10 * _TENS.index(parts[0])
    return value + (_SMALL.index(parts[1]) if len(parts) == 2 else 0)


def _date(p: str) -> str:
    m = re.search(r"(\d+) ([A-Za-z]+) (\d{4})", p) or re.search(r"([A-Za-z]+) (\d+), (\d{4})", p)
    assert m is not None, p
    a, b, y = m.groups()
    day, month = (a, b) if a.isdigit() else (b, a)
    return datetime.strptime(f"{day} {month} {y}", "%d %B %Y").strftime("%Y-%m-%d")


def _unit(p: str) -> str:
    m = re.search(r"(\d+) ([a-z]+) (?:to|into) ([a-z]+)", p)
    if m:
        x, a, b = m.groups()
    else:  # "How many {b} are in {x} {a}?"
        b, x, a = re.search(r"many ([a-z]+) are in (\d+) ([a-z]+)", p).groups()
    return f"{int(x) * _UNITS[a]} {b}"


REFERENCE = {
    "addition": lambda p: str(sum(_ints(p))),
    "multiplication": lambda p: str(int(np.prod(_ints(p)))),
    "sort_numbers": lambda p: ", ".join(map(str, sorted(_ints(p)))),
    "parity": lambda p: "even" if _ints(p)[0] % 2 == 0 else "odd",
    "reverse_string": lambda p: _quoted(p)[0][::-1],
    "uppercase": lambda p: _quoted(p)[0].upper(),
    "count_letter": lambda p: str(_quoted(p)[1].count(_quoted(p)[0])),
    "word_to_number": lambda p: str(_word_value(_quoted(p)[0])),
    "next_letter": lambda p: chr(ord(re.search(r"(?:after|following|follows) ([A-Za-z])\b", p)[1].upper()) + 1),
    "date_format": _date,
    "unit_conversion": _unit,
}  # fmt: skip


# --- Tests -------------------------------------------------------------------------------


def test_determinism() -> None:
    cfg = SyntheticConfig(n_train=500, n_eval=100, seed=3)
    assert generate(cfg) == generate(cfg)
    other_train, other_eval = generate(SyntheticConfig(n_train=500, n_eval=100, seed=4))
    train, evaluation = generate(cfg)
    assert [r["prompt"] for r in train] != [r["prompt"] for r in other_train]
    assert [r["prompt"] for r in evaluation] != [r["prompt"] for r in other_eval]


def test_eval_stream_independent_of_train() -> None:
    # Eval uses its own seed stream: the train size must not change a single eval example.
    _, eval_a = generate(SyntheticConfig(n_train=300, n_eval=150, seed=1))
    train_b, eval_b = generate(SyntheticConfig(n_train=900, n_eval=150, seed=1))
    assert eval_a == eval_b
    # ...and eval is not a copy of train where the prompt space is huge (~3e6 additions).
    train_add = {r["prompt"] for r in train_b if r["reference"] == "addition"}
    eval_add = [r["prompt"] for r in eval_b if r["reference"] == "addition"]
    assert eval_add and sum(p in train_add for p in eval_add) <= 1


def test_counts_keys_and_lengths(data) -> None:
    train, evaluation = data
    assert len(train) == 8000 and len(evaluation) == 2000
    for r in train + evaluation:
        assert set(r) == KEYS and all(isinstance(v, str) and v for v in r.values())
        assert len((r["prompt"] + " " + r["response"]).split()) <= 40


def test_every_skill_in_train(data) -> None:
    assert set(Counter(r["reference"] for r in data[0])) == set(SKILLS)
    # Smallest legal train set: rounding must not starve any skill.
    tiny, _ = generate(SyntheticConfig(n_train=len(SKILLS), n_eval=5))
    assert Counter(r["reference"] for r in tiny) == dict.fromkeys(SKILLS, 1)


def test_skills_and_categories(data) -> None:
    assert len(SKILLS) >= 16 and len(set(SKILLS)) == len(SKILLS)
    assert len(NOISE_SKILLS) >= 2 and set(NOISE_SKILLS) <= set(SKILLS)
    assert set(DEFAULT_EVAL_FOCUS) <= set(SKILLS) - set(NOISE_SKILLS)
    assert 2 <= len(CATEGORIES) <= 8
    assert all(2 <= len(s) <= 4 for s in CATEGORIES.values())
    flat = [s for skills in CATEGORIES.values() for s in skills]
    assert sorted(flat) == sorted(SKILLS)  # a partition: each skill in exactly one category
    category_of = {s: c for c, skills in CATEGORIES.items() for s in skills}
    for r in data[0] + data[1]:
        assert r["domain"] == category_of[r["reference"]]


def test_normal_responses_are_functions_of_prompt(data) -> None:
    for skill, records in _by_skill(data[0]).items():
        answers: dict[str, set[str]] = defaultdict(set)
        for r in records:
            answers[r["prompt"]].add(r["response"])
        collisions = max(len(v) for v in answers.values())
        if skill in NOISE_SKILLS:
            assert collisions > 1, f"{skill}: same prompt should get different responses"
        else:
            assert collisions == 1, f"{skill}: response must be a function of the prompt"


def test_responses_match_brute_force_reference(data) -> None:
    by_skill = _by_skill(data[0] + data[1])
    for skill, solve in REFERENCE.items():
        for r in by_skill[skill]:
            assert r["response"] == solve(r["prompt"]), (skill, r)


def test_noise_responses_ignore_prompt(data) -> None:
    # A noise response carries no information about the prompt: the response distribution
    # given a prompt key matches the marginal (no response is shared by most of a key).
    for skill in NOISE_SKILLS:
        groups: dict[str, list[str]] = defaultdict(list)
        for r in _by_skill(data[0])[skill]:
            groups[_normalise(r["prompt"])].append(r["response"])
        big = [g for g in groups.values() if len(g) >= 5]
        assert big
        for g in big:
            assert Counter(g).most_common(1)[0][1] <= len(g) // 2 + 1


def test_train_proportions(data) -> None:
    cfg = SyntheticConfig(n_train=8000, n_eval=2000, seed=7)
    train_p, eval_p = skill_proportions(cfg)
    assert list(train_p) == list(SKILLS) == list(eval_p)
    assert sum(train_p.values()) == pytest.approx(1) and sum(eval_p.values()) == pytest.approx(1)
    assert max(train_p.values()) / min(train_p.values()) == pytest.approx(cfg.size_ratio)
    counts = Counter(r["reference"] for r in data[0])
    for s in SKILLS:
        assert abs(counts[s] - train_p[s] * cfg.n_train) <= 1
    flat, _ = skill_proportions(SyntheticConfig(size_ratio=1.0))
    assert set(np.round(list(flat.values()), 12)) == {round(1 / len(SKILLS), 12)}


def test_default_eval_skew(data) -> None:
    counts = Counter(r["reference"] for r in data[1])
    focus_share = sum(counts[s] for s in DEFAULT_EVAL_FOCUS) / len(data[1])
    assert focus_share == pytest.approx(0.7, abs=0.02)
    assert all(counts[s] == 0 for s in NOISE_SKILLS)
    rest = set(SKILLS) - set(DEFAULT_EVAL_FOCUS) - set(NOISE_SKILLS)
    assert all(counts[s] > 0 for s in rest)  # the remaining mass is spread, not dropped


def test_custom_eval_focus_and_skew() -> None:
    focus = ["addition", "parity"]  # a list, as Hydra would pass it
    cfg = SyntheticConfig(n_train=200, n_eval=1000, eval_skew=0.5, eval_focus=focus)
    assert cfg.eval_focus == ("addition", "parity")
    _, evaluation = generate(cfg)
    counts = Counter(r["reference"] for r in evaluation)
    assert counts["addition"] + counts["parity"] == pytest.approx(500, abs=2)


def test_explicit_eval_proportions_honoured() -> None:
    cfg = SyntheticConfig(n_eval=1000, eval_proportions={"addition": 1.0, "noise_lottery": 3.0})
    _, eval_p = skill_proportions(cfg)
    assert eval_p["addition"] == pytest.approx(0.25) and eval_p["noise_lottery"] == 0.75
    assert sum(v for s, v in eval_p.items() if s not in ("addition", "noise_lottery")) == 0
    _, evaluation = generate(cfg)
    assert Counter(r["reference"] for r in evaluation) == {"addition": 250, "noise_lottery": 750}


def _near_duplicates(records: list[dict[str, str]]) -> dict[str, int]:
    """Per skill: raw prompt variants beyond the first that normalise to the same text."""
    variants: dict[str, set[str]] = defaultdict(set)
    skill_of: dict[str, set[str]] = defaultdict(set)
    for r in records:
        key = _normalise(r["prompt"])
        variants[key].add(r["prompt"])
        skill_of[key].add(r["reference"])
    out: Counter[str] = Counter()
    for key, v in variants.items():
        assert len(skill_of[key]) == 1  # a near-duplicate stays within its skill
        out[next(iter(skill_of[key]))] += len(v) - 1
    return out


def test_near_duplicates() -> None:
    n = 20000
    train, _ = generate(SyntheticConfig(n_train=n, n_eval=10, near_duplicate_rate=0.02))
    found = _near_duplicates(train)
    assert 0.3 * 0.02 * n <= sum(found.values()) <= 0.02 * n
    # In a skill with a huge prompt space every copy is a new variant: the rate is exact-ish.
    n_add = sum(r["reference"] == "addition" for r in train)
    assert found["addition"] == pytest.approx(0.02 * n_add, rel=0.15)
    clean, _ = generate(SyntheticConfig(n_train=n, n_eval=10, near_duplicate_rate=0.0))
    assert sum(_near_duplicates(clean).values()) == 0


def test_lexical_distinctness_tfidf() -> None:
    # Uniform eval over all skills (noise included), from a separate seed stream.
    cfg = SyntheticConfig(
        n_train=4000, n_eval=2000, seed=11, eval_proportions=dict.fromkeys(SKILLS, 1.0)
    )
    train, evaluation = generate(cfg)
    vec = TfidfVectorizer()
    x_train = vec.fit_transform([r["prompt"] for r in train])
    clf = NearestCentroid().fit(x_train, [r["reference"] for r in train])
    pred = clf.predict(vec.transform([r["prompt"] for r in evaluation]))
    accuracy = float(np.mean(pred == np.array([r["reference"] for r in evaluation])))
    assert accuracy >= 0.95


def test_speed_100k() -> None:
    start = time.perf_counter()
    train, _ = generate(SyntheticConfig(n_train=100_000, n_eval=1000))
    assert len(train) == 100_000
    assert time.perf_counter() - start < 10.0


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"n_train": 5}, "data.synthetic.n_train"),
        ({"n_eval": 0}, "data.synthetic.n_eval"),
        ({"seed": -1}, "data.synthetic.seed"),
        ({"eval_skew": 1.5}, "data.synthetic.eval_skew"),
        ({"eval_skew": -0.1}, "data.synthetic.eval_skew"),
        ({"eval_focus": ("addition", "juggling")}, "data.synthetic.eval_focus"),
        ({"eval_focus": ()}, "data.synthetic.eval_focus"),
        ({"eval_focus": ("parity", "parity")}, "data.synthetic.eval_focus"),
        ({"eval_proportions": {"juggling": 1.0}}, "data.synthetic.eval_proportions"),
        ({"eval_proportions": {"addition": -1.0}}, "data.synthetic.eval_proportions"),
        ({"eval_proportions": {"addition": 0.0}}, "data.synthetic.eval_proportions"),
        ({"size_ratio": 0.5}, "data.synthetic.size_ratio"),
        ({"near_duplicate_rate": 0.9}, "data.synthetic.near_duplicate_rate"),
        ({"n_train": 100.5}, "data.synthetic.n_train"),
        ({"n_train": None}, "data.synthetic.n_train"),
        ({"n_eval": "many"}, "data.synthetic.n_eval"),
        ({"seed": float("nan")}, "data.synthetic.seed"),
        ({"eval_skew": None}, "data.synthetic.eval_skew"),
        ({"size_ratio": float("nan")}, "data.synthetic.size_ratio"),
        ({"eval_proportions": {"addition": "lots"}}, "data.synthetic.eval_proportions"),
    ],
)
def test_config_validation(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=re.escape(key)):
        SyntheticConfig(**kwargs)


def test_config_coerces_hydra_values() -> None:
    # CLI overrides arrive as floats (n_train=2e4) or bare strings (eval_focus=addition).
    cfg = SyntheticConfig(n_train=300.0, n_eval=50.0, seed=2.0, eval_focus="addition")
    assert (cfg.n_train, cfg.n_eval, cfg.seed) == (300, 50, 2)
    assert all(type(v) is int for v in (cfg.n_train, cfg.n_eval, cfg.seed))
    assert cfg.eval_focus == ("addition",)
    train, evaluation = generate(cfg)
    assert generate(SyntheticConfig(n_train=300, n_eval=50, seed=2, eval_focus=("addition",))) == (
        train,
        evaluation,
    )
    assert Counter(r["reference"] for r in evaluation)["addition"] == 35  # 0.7 * 50
