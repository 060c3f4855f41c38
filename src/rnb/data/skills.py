"""Latent-skill generators for the built-in synthetic testbed (:mod:`rnb.data.synthetic`).

Each skill is a function ``gen(rng, n) -> (prompts, responses)``. Randomness is drawn in
bulk with numpy (one call per field) and only the string formatting is per-example Python,
which keeps 100k examples well under a second. Every skill uses its own vocabulary in its
templates (sum/plus vs product/times, backwards vs uppercase, ...) so that a bag-of-words
or sentence embedder can tell skills apart from the prompt alone. Responses of the normal
skills are deterministic functions of the prompt; the two ``noise_*`` skills answer with
random tokens that no model can learn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rnb.data.skill_vocab import (
    ALPHABET,
    ANIMALS,
    ANTONYM_A,
    ANTONYM_B,
    BACKWARD_WORDS,
    CAPITALS,
    CAPS_ADJ,
    CAPS_NOUN,
    COUNT_WORDS,
    COUNTRIES,
    ELEMENTS,
    ENGLISH,
    FRENCH,
    MONTHS,
    NONSENSE_TOPICS,
    NUMBER_WORDS,
    PAINT_A,
    PAINT_B,
    PAINT_MIX,
    PLURAL,
    SINGULAR,
    SOUNDS,
    SYLLABLES,
    SYMBOLS,
    UNITS,
)

SkillGen = Callable[[np.random.Generator, int], tuple[list[str], list[str]]]
# A skill body draws its variables and returns (template fields, responses) per example.
_Body = Callable[[np.random.Generator, int], tuple[list[dict[str, Any]], list[str]]]


# Prompt templates, " | "-separated. Each skill's templates share skill-specific keywords.
TEMPLATES: dict[str, tuple[str, ...]] = {
    name: tuple(t.strip() for t in spec.split(" | "))
    for name, spec in {
        "addition": "Shopping receipt: add the prices {a} cents and {b} cents to get the total bill. | "
        "Shopping receipt: add up the prices {a} cents and {b} cents to get the total bill. | "
        "Shopping receipt: sum the prices {a} cents and {b} cents to get the total bill.",
        "multiplication": "Seating plan multiplication: {a} rows of {b} chairs, so multiply for the seats. | "
        "Seating plan multiplication: multiply {a} rows by {b} chairs for the seats. | "
        "Seating plan multiplication: with {a} rows of {b} chairs, multiply for the seats.",
        "reverse_string": "Mirror writing like Leonardo da Vinci: write '{x}' backwards, end to start. | "
        "Mirror writing like Leonardo da Vinci: spell '{x}' backwards, end to start. | "
        "Mirror writing like Leonardo da Vinci: reverse '{x}', end to start.",
        "uppercase": "Ship name painting: paint the ship name '{x}' on the hull in uppercase capitals. | "
        "Ship name painting: letter the ship name '{x}' on the hull in uppercase capitals. | "
        "Ship name painting: write the ship name '{x}' on the hull in uppercase capitals.",
        "count_letter": "Scrabble tile check: how many '{c}' tiles are needed to spell '{x}'? | "
        "Scrabble tile check: count the '{c}' tiles needed to spell '{x}'. | "
        "Scrabble tile check: how many '{c}' tiles does spelling '{x}' need?",
        "country_capital": "Atlas quiz on national capitals: what is the capital city of {x}? | "
        "Atlas quiz on national capitals: name the capital city of {x}. | "
        "Atlas quiz on national capitals: which city is the capital of {x}?",
        "element_symbol": "Chemical elements: write the periodic table symbol for the element {x}. | "
        "Chemical elements: give the periodic table symbol for the element {x}. | "
        "Chemical elements: what is the periodic table symbol for the element {x}?",
        "antonym": "Opposites game: say the adjective that means the exact opposite of '{x}'. | "
        "Opposites game: name the adjective that means the exact opposite of '{x}'. | "
        "Opposites game: which adjective means the exact opposite of '{x}'?",
        "plural": "Plural nouns: one '{x}', but two of them are called what? | "
        "Plural nouns: one '{x}', but many of them are called what? | "
        "Plural nouns: one '{x}', but several of them are called what?",
        "date_format": "ISO 8601: write the date {d} {m} {y} as YYYY-MM-DD. | "
        "ISO 8601: reformat the date {m} {d}, {y} as YYYY-MM-DD. | "
        "ISO 8601: give the date {d} {m} {y} as YYYY-MM-DD.",
        "unit_conversion": "Unit converter for lengths, weights, volumes and times: convert {x} {a} to {b}. | "
        "Unit converter for lengths, weights, volumes and times: convert {x} {a} into {b}. | "
        "Unit converter for lengths, weights, volumes and times: how many {b} are in {x} {a}?",
        "sort_numbers": "Ascending sort, lowest to highest value: {x}. | "
        "Ascending sort, from lowest to highest value: {x}. | "
        "Ascending sort, lowest value to highest: {x}.",
        "word_to_number": "Spoken English number to Arabic numerals: write '{x}' in Arabic numerals. | "
        "Spoken English number to Arabic numerals: give '{x}' in Arabic numerals. | "
        "Spoken English number to Arabic numerals: what is '{x}' in Arabic numerals?",
        "colour_mixing": "What colour do you get by mixing {a} and {b} paint? | "
        "Mix {a} paint with {b} paint: which colour results? | "
        "Mixing {a} paint with {b} paint gives which colour?",
        "animal_sound": "Farm and zoo animal noises: what sound does a {x} make? | "
        "Farm and zoo animal noises: which sound does a {x} make? | "
        "Farm and zoo animal noises: how does a {x} sound?",
        "next_letter": "Alphabet successor: what comes after {x}? | "
        "Alphabet successor: what follows {x}? | "
        "Alphabet successor: name what comes after {x}.",
        "parity": "Parity check: is {x} even or odd? | "
        "Parity check: say whether {x} is even or odd. | "
        "Parity check: even or odd, {x}?",
        "french_translation": "French vocabulary lesson: translate the French word '{x}' into English. | "
        "French vocabulary lesson: what is the French word '{x}' in English? | "
        "French vocabulary lesson: give the English for the French word '{x}'.",
        "noise_gibberish": "Baby babble: the goo-goo gibberish a babbling toddler says to the {x}. | "
        "Baby babble: the goo-goo gibberish a babbling toddler sings to the {x}. | "
        "Baby babble: the goo-goo gibberish a babbling toddler makes at the {x}.",
        "noise_lottery": "Lottery jackpot: predict the winning numbers for ticket {x}. | "
        "Lottery jackpot: guess the winning numbers for ticket {x}. | "
        "Lottery jackpot: pick the winning numbers for ticket {x}.",
    }.items()
}


def _xs(values: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"x": v} for v in values]


def _lookup(keys: Sequence[str], values: Sequence[str]) -> _Body:
    """Body that asks for ``values[i]`` given ``keys[i]`` (a memorisable table)."""

    def body(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
        idx = rng.integers(0, len(keys), n).tolist()
        return _xs([keys[i] for i in idx]), [values[i] for i in idx]

    return body


def _choice(rng: np.random.Generator, pool: Sequence[str], n: int) -> list[str]:
    return [pool[i] for i in rng.integers(0, len(pool), n).tolist()]


def _arith(lo: int, hi: int, op: Callable[[int, int], int]) -> _Body:
    def body(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
        a, b = rng.integers(lo, hi, (2, n)).tolist()
        pairs = list(zip(a, b, strict=True))
        return [{"a": x, "b": y} for x, y in pairs], [str(op(x, y)) for x, y in pairs]

    return body


def _reverse(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    words = _choice(rng, BACKWARD_WORDS, n)
    return _xs(words), [w[::-1] for w in words]


def _uppercase(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    adj, noun = _choice(rng, CAPS_ADJ, n), _choice(rng, CAPS_NOUN, n)
    phrases = [f"{a} {b}" for a, b in zip(adj, noun, strict=True)]
    return _xs(phrases), [p.upper() for p in phrases]


def _count_letter(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    words = _choice(rng, COUNT_WORDS, n)
    # Mostly ask for a letter that occurs (informative counts), sometimes any letter (often 0).
    pos, other = rng.random(n).tolist(), _choice(rng, ALPHABET.lower(), n)
    cw = [
        (w[int(u * len(w))] if u < 0.85 else o, w)
        for w, u, o in zip(words, pos, other, strict=True)
    ]
    return [{"c": c, "x": w} for c, w in cw], [str(w.count(c)) for c, w in cw]


def _date_format(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    # Days 1..28 are valid in every month, so no calendar logic is needed.
    d, m, y = rng.integers(1, 29, n), rng.integers(1, 13, n), rng.integers(1950, 2031, n)
    dmy = list(zip(d.tolist(), m.tolist(), y.tolist(), strict=True))
    fields = [{"d": a, "m": MONTHS[b - 1], "y": c} for a, b, c in dmy]
    return fields, [f"{c:04d}-{b:02d}-{a:02d}" for a, b, c in dmy]


def _unit_conversion(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    ux = zip(rng.integers(0, len(UNITS), n).tolist(), rng.integers(1, 51, n).tolist(), strict=True)
    rows = [(UNITS[u], x) for u, x in ux]
    fields = [{"x": x, "a": a, "b": b} for (a, b, _), x in rows]
    return fields, [f"{x * f} {b}" for (_, b, f), x in rows]


def _sort_numbers(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    values, lengths = rng.integers(0, 100, (n, 6)).tolist(), rng.integers(4, 7, n).tolist()
    lists = [v[:k] for v, k in zip(values, lengths, strict=True)]
    return _xs([", ".join(map(str, v)) for v in lists]), [
        ", ".join(map(str, sorted(v))) for v in lists
    ]


def _word_to_number(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    values = rng.integers(0, 100, n).tolist()
    return _xs([NUMBER_WORDS[v] for v in values]), [str(v) for v in values]


def _colour_mixing(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    pair, swap = rng.integers(0, len(PAINT_MIX), n).tolist(), rng.integers(0, 2, n).tolist()
    # Mixing is commutative: show both orders so the model cannot rely on position.
    ab = [(PAINT_A[p], PAINT_B[p])[:: 1 - 2 * s] for p, s in zip(pair, swap, strict=True)]
    return [{"a": a, "b": b} for a, b in ab], [PAINT_MIX[p] for p in pair]


def _next_letter(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    idx = rng.integers(0, 25, n).tolist()  # 'Z' has no successor
    return _xs([ALPHABET[i] for i in idx]), [ALPHABET[i + 1] for i in idx]


def _parity(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    values = rng.integers(0, 10000, n).tolist()
    return _xs(values), ["odd" if v % 2 else "even" for v in values]


def _noise_gibberish(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    # The response is drawn independently of the prompt: unlearnable by construction.
    topics, n_words = _choice(rng, NONSENSE_TOPICS, n), rng.integers(3, 7, n).tolist()
    syl = rng.integers(0, len(SYLLABLES), (n, 6, 2)).tolist()
    return _xs(topics), [
        " ".join(SYLLABLES[a] + SYLLABLES[b] for a, b in s[:k])
        for s, k in zip(syl, n_words, strict=True)
    ]


def _noise_lottery(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    # Random draws unrelated to the ticket number: the best a model can do is the prior.
    tickets, draws = rng.integers(1, 21, n).tolist(), np.sort(rng.integers(1, 50, (n, 6)), axis=1)
    return _xs(tickets), [" - ".join(map(str, d)) for d in draws.tolist()]


def _skill(templates: tuple[str, ...], body: _Body) -> SkillGen:
    """Wrap a body: draw its fields, then format each into a uniformly chosen template."""

    def gen(rng: np.random.Generator, n: int) -> tuple[list[str], list[str]]:
        fields, responses = body(rng, n)
        tid = rng.integers(0, len(templates), n).tolist()
        prompts = [templates[t].format(**f) for t, f in zip(tid, fields, strict=True)]
        return prompts, responses

    return gen


# Registry. The order here is the train size order used by ``rnb.data.synthetic``
# (largest share first); the default eval-focus skills sit near the small end on purpose,
# so that natural (size-proportional) mixing under-serves what the eval set asks for.
_BODIES: dict[str, _Body] = {
    "addition": _arith(0, 1000, lambda a, b: a + b),
    "uppercase": _uppercase,
    "animal_sound": _lookup(ANIMALS, SOUNDS),
    "noise_gibberish": _noise_gibberish,
    "antonym": _lookup(ANTONYM_A, ANTONYM_B),
    "plural": _lookup(SINGULAR, PLURAL),
    "country_capital": _lookup(COUNTRIES, CAPITALS),
    "parity": _parity,
    "reverse_string": _reverse,
    "word_to_number": _word_to_number,
    "noise_lottery": _noise_lottery,
    "element_symbol": _lookup(ELEMENTS, SYMBOLS),
    "unit_conversion": _unit_conversion,
    "colour_mixing": _colour_mixing,
    "sort_numbers": _sort_numbers,
    "french_translation": _lookup(FRENCH, ENGLISH),
    "count_letter": _count_letter,
    "next_letter": _next_letter,
    "date_format": _date_format,
    "multiplication": _arith(2, 100, lambda a, b: a * b),
}
GENERATORS: dict[str, SkillGen] = {k: _skill(TEMPLATES[k], b) for k, b in _BODIES.items()}
