"""Built-in synthetic testbed: instruction-style examples generated from latent skills.

The project's offline default dataset. It is built so that data mixing matters and so that
regrouping has something to find:

* 20 fine-grained *latent skills* (:data:`SKILLS`) with lexically distinct prompt templates
  (see :mod:`rnb.data.skills`); two of them (:data:`NOISE_SKILLS`) answer at random and
  cannot be learned.
* 6 coarse *predefined categories* (:data:`CATEGORIES`), each a mix of 3–4 unrelated skills,
  like Dolly's task-type labels. A record's ``domain`` is its category, its ``reference`` the
  latent skill (for agreement metrics only; training never sees it).
* Unequal skill sizes in train (geometric spread, largest / smallest = ``size_ratio``), with
  the default eval-focus skills among the small ones, and ~2% near-duplicates.
* A separately seeded eval split whose skill mix is skewed: by default 70% of the eval mass on
  4 learnable skills, the rest spread over the other learnable skills, none on noise.

Counts per skill are allocated deterministically from the proportions (largest remainder),
so a split's skill mix matches :func:`skill_proportions` up to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnb.data.skills import GENERATORS

SKILLS: tuple[str, ...] = tuple(GENERATORS)
NOISE_SKILLS: tuple[str, ...] = tuple(s for s in SKILLS if s.startswith("noise_"))
# Each category mixes unrelated skills, so a category is a poor unit for mixing: the eval
# focus skills below fall into three different categories next to unrelated (or noise) skills.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "open_qa": ("country_capital", "multiplication", "plural", "noise_lottery"),
    "closed_qa": ("element_symbol", "sort_numbers", "animal_sound"),
    "classification": ("parity", "antonym", "reverse_string"),
    "information_extraction": ("count_letter", "date_format", "colour_mixing"),
    "brainstorming": ("noise_gibberish", "word_to_number", "french_translation", "next_letter"),
    "general_qa": ("uppercase", "addition", "unit_conversion"),
}
DEFAULT_EVAL_FOCUS: tuple[str, ...] = (
    "multiplication",
    "date_format",
    "country_capital",
    "sort_numbers",
)
_CATEGORY_OF: dict[str, str] = {s: c for c, skills in CATEGORIES.items() for s in skills}
_KEY = "data.synthetic"
# Seed-stream ids: train and eval never share random numbers.
_TRAIN, _EVAL = 0, 1


@dataclass(frozen=True)
class SyntheticConfig:
    """Configuration of the synthetic testbed (Hydra group ``data.synthetic``).

    Attributes:
        n_train: Number of training examples (at least one per skill).
        n_eval: Number of eval examples.
        seed: Seed of all randomness; train and eval use separate streams of it.
        eval_skew: Share of eval mass on the ``eval_focus`` skills; the rest is spread
            evenly over the other learnable skills.
        eval_focus: Skills that receive ``eval_skew`` of the eval mass (evenly); ``None``
            means :data:`DEFAULT_EVAL_FOCUS`.
        eval_proportions: Explicit eval skill weights (normalised; unlisted skills get 0).
            Overrides ``eval_skew`` and ``eval_focus`` when given.
        size_ratio: Largest / smallest skill share in train (1 = equal sizes).
        near_duplicate_rate: Fraction of train examples that are perturbed copies
            (case/punctuation/spacing) of another example of the same skill.
    """

    n_train: int = 20000
    n_eval: int = 2000
    seed: int = 0
    eval_skew: float = 0.7
    eval_focus: tuple[str, ...] | None = None
    eval_proportions: dict[str, float] | None = None
    size_ratio: float = 8.0
    near_duplicate_rate: float = 0.02

    def __post_init__(self) -> None:
        # Hydra hands over ListConfig/DictConfig and may parse a CLI override such as
        # ``n_train=2e4`` as a float: store plain, typed copies so generate() never sees them.
        for name in ("n_train", "n_eval", "seed"):
            object.__setattr__(self, name, _number(name, getattr(self, name), integer=True))
        for name in ("eval_skew", "size_ratio", "near_duplicate_rate"):
            object.__setattr__(self, name, _number(name, getattr(self, name), integer=False))
        if self.eval_focus is not None:
            focus = self.eval_focus
            # A bare string (``eval_focus=addition`` on the CLI) means one skill, not letters.
            focus = (focus,) if isinstance(focus, str) else focus
            object.__setattr__(self, "eval_focus", tuple(str(s) for s in focus))
        if self.eval_proportions is not None:
            props = {
                str(k): _number(f"eval_proportions.{k}", v, integer=False)
                for k, v in dict(self.eval_proportions).items()
            }
            object.__setattr__(self, "eval_proportions", props)
        _validate(self)


def _fail(field: str, msg: str) -> ValueError:
    return ValueError(f"{_KEY}.{field}: {msg}")


def _number(field: str, value: Any, integer: bool) -> Any:
    """``value`` as an ``int`` (if ``integer``) or ``float``; a ValueError naming the key else."""
    if isinstance(value, (bool, str)) or value is None:
        raise _fail(field, f"need a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise _fail(field, f"need a number, got {value!r}") from None
    if not integer:
        return x
    if not x.is_integer():  # also rejects nan and inf
        raise _fail(field, f"need an integer, got {value!r}")
    return int(x)


def _check_skills(field: str, names: Any) -> None:
    unknown = sorted(set(names) - set(SKILLS))
    if unknown:
        raise _fail(field, f"unknown skill(s) {unknown}; known skills are {list(SKILLS)}")


def _validate(cfg: SyntheticConfig) -> None:
    m = len(SKILLS)
    if cfg.n_train < m:
        raise _fail("n_train", f"need an integer n_train >= {m} (one per skill), got {cfg.n_train}")
    if cfg.n_eval < 1:
        raise _fail("n_eval", f"need an integer n_eval >= 1, got {cfg.n_eval}")
    if cfg.seed < 0:
        raise _fail("seed", f"need a non-negative integer seed, got {cfg.seed}")
    if not 0.0 <= cfg.eval_skew <= 1.0:
        raise _fail("eval_skew", f"need 0 <= eval_skew <= 1, got {cfg.eval_skew}")
    if not (math.isfinite(cfg.size_ratio) and cfg.size_ratio >= 1.0):
        raise _fail("size_ratio", f"need a finite size_ratio >= 1, got {cfg.size_ratio}")
    if not 0.0 <= cfg.near_duplicate_rate <= 0.5:
        raise _fail(
            "near_duplicate_rate",
            f"need 0 <= near_duplicate_rate <= 0.5, got {cfg.near_duplicate_rate}",
        )
    if cfg.eval_focus is not None:
        if not cfg.eval_focus:
            raise _fail("eval_focus", "need at least one skill (or null for the default)")
        if len(set(cfg.eval_focus)) != len(cfg.eval_focus):
            raise _fail("eval_focus", f"duplicate skills in {list(cfg.eval_focus)}")
        _check_skills("eval_focus", cfg.eval_focus)
    if cfg.eval_proportions is not None:
        _check_skills("eval_proportions", cfg.eval_proportions)
        bad = {k: v for k, v in cfg.eval_proportions.items() if not (v >= 0 and math.isfinite(v))}
        if bad:
            raise _fail("eval_proportions", f"weights must be finite and >= 0, got {bad}")
        if sum(cfg.eval_proportions.values()) <= 0:
            raise _fail("eval_proportions", "weights sum to 0; give at least one positive weight")


def skill_proportions(cfg: SyntheticConfig) -> tuple[dict[str, float], dict[str, float]]:
    """The (train, eval) skill distributions that :func:`generate` samples from.

    Train shares decay geometrically along :data:`SKILLS` order from the largest to
    ``1 / size_ratio`` of it. Eval shares follow ``eval_proportions`` if given, else
    ``eval_skew`` evenly over the focus skills and the rest evenly over the other
    learnable skills (noise skills get none). If the focus covers every learnable skill,
    the focus skills share all the mass.

    Args:
        cfg: Testbed configuration.

    Returns:
        Two dicts over all of :data:`SKILLS` (in that order), each summing to 1.
    """
    m = len(SKILLS)
    raw = [cfg.size_ratio ** (-i / (m - 1)) for i in range(m)]
    train = {s: w / sum(raw) for s, w in zip(SKILLS, raw, strict=True)}
    if cfg.eval_proportions is not None:
        weights = {s: cfg.eval_proportions.get(s, 0.0) for s in SKILLS}
    else:
        focus = cfg.eval_focus or DEFAULT_EVAL_FOCUS
        others = [s for s in SKILLS if s not in focus and s not in NOISE_SKILLS]
        f_share = cfg.eval_skew if others else 1.0
        weights = {
            s: f_share / len(focus)
            if s in focus
            else ((1.0 - f_share) / len(others) if s in others else 0.0)
            for s in SKILLS
        }
    total = sum(weights.values())
    return train, {s: w / total for s, w in weights.items()}


def _allocate(shares: np.ndarray, n: int) -> np.ndarray:
    """Integer counts summing to ``n`` closest to ``shares * n`` (largest remainder)."""
    exact = shares * n
    counts = np.floor(exact).astype(np.int64)
    # Stable sort so ties go to the earlier skill: deterministic across platforms.
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    return counts


def _perturb(prompts: list[str], kinds: list[int]) -> list[str]:
    """Near-duplicate edits that change only case, punctuation or spacing."""
    out = []
    for p, kind in zip(prompts, kinds, strict=True):
        q = (p.lower(), p.rstrip(".?!"), p + p[-1], p.replace(" ", "  ", 1))[kind]
        out.append(q if q != p else p + "!")  # every edit must really change the text
    return out


def _split(
    cfg: SyntheticConfig, shares: dict[str, float], n: int, stream: int
) -> list[dict[str, str]]:
    counts = _allocate(np.array([shares[s] for s in SKILLS]), n)
    if stream == _TRAIN:
        # Every skill must appear in train: move one example from the largest skill to any
        # skill that rounding left empty (possible when n_train is close to len(SKILLS)).
        for i in np.flatnonzero(counts == 0):
            counts[np.argmax(counts)] -= 1
            counts[i] = 1
        n_dup = _allocate(counts / n, round(cfg.near_duplicate_rate * n))
        n_dup = np.minimum(n_dup, np.maximum(counts - 1, 0))  # keep >= 1 original per skill
    else:
        n_dup = np.zeros_like(counts)
    prompts: list[str] = []
    responses: list[str] = []
    refs: list[str] = []
    for i, skill in enumerate(SKILLS):
        k, d = int(counts[i]), int(n_dup[i])
        if k == 0:
            continue
        # One stream per (seed, split, skill): a skill's examples do not depend on the others.
        rng = np.random.default_rng([cfg.seed, stream, i])
        p, r = GENERATORS[skill](rng, k - d)
        if d:
            src = rng.integers(0, k - d, d).tolist()
            p += _perturb([p[j] for j in src], rng.integers(0, 4, d).tolist())
            r += [r[j] for j in src]
        prompts += p
        responses += r
        refs += [skill] * k
    order = np.random.default_rng([cfg.seed, stream, len(SKILLS)]).permutation(n).tolist()
    return [
        {
            "prompt": prompts[j],
            "response": responses[j],
            "domain": _CATEGORY_OF[refs[j]],
            "reference": refs[j],
        }
        for j in order
    ]


def generate(cfg: SyntheticConfig) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Generate the train and eval splits.

    Args:
        cfg: Testbed configuration; the same config always gives identical output.

    Returns:
        ``(train, eval)``: lists of records with keys ``prompt``, ``response``, ``domain``
        (predefined category) and ``reference`` (latent skill), shuffled.
    """
    train_shares, eval_shares = skill_proportions(cfg)
    train = _split(cfg, train_shares, cfg.n_train, _TRAIN)
    evaluation = _split(cfg, eval_shares, cfg.n_eval, _EVAL)
    return train, evaluation
