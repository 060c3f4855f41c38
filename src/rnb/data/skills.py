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

SkillGen = Callable[[np.random.Generator, int], tuple[list[str], list[str]]]
# A skill body draws its variables and returns (template fields, responses) per example.
_Body = Callable[[np.random.Generator, int], tuple[list[dict[str, Any]], list[str]]]


def _words(spec: str) -> list[str]:
    return spec.split()


def _table(spec: str) -> list[list[str]]:
    """Parse ``"a:b c:d"`` into columns ``[["a", "c"], ["b", "d"]]``; ``_`` is a space."""
    rows = [[cell.replace("_", " ") for cell in item.split(":")] for item in spec.split()]
    return [list(col) for col in zip(*rows, strict=True)]


# Look-up tables. Kept small so a tiny LM can memorise them within a short run.
_COUNTRIES, _CAPITALS = _table(
    "France:Paris Japan:Tokyo Italy:Rome Spain:Madrid Germany:Berlin Egypt:Cairo "
    "Kenya:Nairobi Peru:Lima Chile:Santiago Canada:Ottawa Brazil:Brasilia India:New_Delhi "
    "China:Beijing Russia:Moscow Greece:Athens Norway:Oslo Sweden:Stockholm Poland:Warsaw "
    "Austria:Vienna Portugal:Lisbon Ireland:Dublin Cuba:Havana Mexico:Mexico_City "
    "Argentina:Buenos_Aires Australia:Canberra Thailand:Bangkok Vietnam:Hanoi Iran:Tehran "
    "Turkey:Ankara Finland:Helsinki Denmark:Copenhagen Hungary:Budapest"
)
_ELEMENTS, _SYMBOLS = _table(
    "hydrogen:H helium:He lithium:Li beryllium:Be boron:B carbon:C nitrogen:N oxygen:O "
    "fluorine:F neon:Ne sodium:Na magnesium:Mg aluminium:Al silicon:Si phosphorus:P "
    "sulfur:S chlorine:Cl argon:Ar potassium:K calcium:Ca iron:Fe copper:Cu zinc:Zn "
    "silver:Ag tin:Sn iodine:I gold:Au mercury:Hg lead:Pb uranium:U"
)
_ANTONYM_A, _ANTONYM_B = _table(
    "hot:cold tall:short happy:sad fast:slow heavy:light early:late rich:poor loud:quiet "
    "wet:dry hard:soft strong:weak thick:thin brave:cowardly clean:dirty empty:full "
    "narrow:wide sharp:blunt smooth:rough young:old cheap:expensive"
)
_SINGULAR, _PLURAL = _table(
    "child:children mouse:mice goose:geese tooth:teeth foot:feet man:men woman:women "
    "person:people ox:oxen cactus:cacti leaf:leaves knife:knives wolf:wolves box:boxes "
    "bus:buses church:churches city:cities baby:babies tomato:tomatoes hero:heroes "
    "sheep:sheep fish:fish book:books chair:chairs river:rivers"
)
_FRENCH, _ENGLISH = _table(
    "chat:cat chien:dog maison:house pain:bread eau:water lune:moon soleil:sun arbre:tree "
    "livre:book fromage:cheese pomme:apple voiture:car fleur:flower mer:sea ciel:sky "
    "porte:door jardin:garden oiseau:bird lait:milk main:hand"
)
_ANIMALS, _SOUNDS = _table(
    "dog:woof cat:meow cow:moo sheep:baa duck:quack pig:oink horse:neigh owl:hoot "
    "lion:roar snake:hiss frog:croak rooster:cock-a-doodle-doo mouse:squeak bee:buzz "
    "donkey:hee-haw crow:caw"
)
_PAINT_A, _PAINT_B, _PAINT_MIX = _table(
    "red:blue:purple red:yellow:orange blue:yellow:green red:white:pink black:white:grey "
    "blue:orange:brown yellow:white:cream red:green:brown"
)
_MONTHS = _words(
    "January February March April May June July August September October November December"
)
_UNITS = [  # (from, to, factor)
    ("kilometres", "metres", 1000),
    ("kilograms", "grams", 1000),
    ("litres", "millilitres", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("days", "hours", 24),
    ("weeks", "days", 7),
    ("feet", "inches", 12),
]
_ONES = _words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
)
_TENS = _words("twenty thirty forty fifty sixty seventy eighty ninety")
_NUMBER_WORDS = _ONES + [t if u == 0 else f"{t}-{_ONES[u]}" for t in _TENS for u in range(10)]
_BACKWARD_WORDS = _words(
    "planet garden window pencil candle rocket basket ladder button pillow marble "
    "carpet violin tunnel puzzle lantern anchor harbor meadow castle"
)
_CAPS_ADJ = _words("quiet brave sleepy clever gentle rusty tiny golden")
_CAPS_NOUN = _words("river falcon engine meadow teapot harbor wizard kettle")
_COUNT_WORDS = _words(
    "banana balloon mississippi coffee committee bookkeeper pepper assessment "
    "success parallel referee cinnamon bubble giraffe tattoo"
)
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NONSENSE_TOPICS = _words("moon kettle lighthouse volcano comet glacier orchard fog")
_SYLLABLES = _words(
    "za ko vi ru me pa lo ti xu bre fli gor nax qui dro ple sku tam wek yol fen hib"
)


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
    words = _choice(rng, _BACKWARD_WORDS, n)
    return _xs(words), [w[::-1] for w in words]


def _uppercase(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    adj, noun = _choice(rng, _CAPS_ADJ, n), _choice(rng, _CAPS_NOUN, n)
    phrases = [f"{a} {b}" for a, b in zip(adj, noun, strict=True)]
    return _xs(phrases), [p.upper() for p in phrases]


def _count_letter(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    words = _choice(rng, _COUNT_WORDS, n)
    # Mostly ask for a letter that occurs (informative counts), sometimes any letter (often 0).
    pos, other = rng.random(n).tolist(), _choice(rng, _ALPHABET.lower(), n)
    cw = [
        (w[int(u * len(w))] if u < 0.85 else o, w)
        for w, u, o in zip(words, pos, other, strict=True)
    ]
    return [{"c": c, "x": w} for c, w in cw], [str(w.count(c)) for c, w in cw]


def _date_format(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    # Days 1..28 are valid in every month, so no calendar logic is needed.
    d, m, y = rng.integers(1, 29, n), rng.integers(1, 13, n), rng.integers(1950, 2031, n)
    dmy = list(zip(d.tolist(), m.tolist(), y.tolist(), strict=True))
    fields = [{"d": a, "m": _MONTHS[b - 1], "y": c} for a, b, c in dmy]
    return fields, [f"{c:04d}-{b:02d}-{a:02d}" for a, b, c in dmy]


def _unit_conversion(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    ux = zip(rng.integers(0, len(_UNITS), n).tolist(), rng.integers(1, 51, n).tolist(), strict=True)
    rows = [(_UNITS[u], x) for u, x in ux]
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
    return _xs([_NUMBER_WORDS[v] for v in values]), [str(v) for v in values]


def _colour_mixing(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    pair, swap = rng.integers(0, len(_PAINT_MIX), n).tolist(), rng.integers(0, 2, n).tolist()
    # Mixing is commutative: show both orders so the model cannot rely on position.
    ab = [(_PAINT_A[p], _PAINT_B[p])[:: 1 - 2 * s] for p, s in zip(pair, swap, strict=True)]
    return [{"a": a, "b": b} for a, b in ab], [_PAINT_MIX[p] for p in pair]


def _next_letter(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    idx = rng.integers(0, 25, n).tolist()  # 'Z' has no successor
    return _xs([_ALPHABET[i] for i in idx]), [_ALPHABET[i + 1] for i in idx]


def _parity(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    values = rng.integers(0, 10000, n).tolist()
    return _xs(values), ["odd" if v % 2 else "even" for v in values]


def _noise_gibberish(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    # The response is drawn independently of the prompt: unlearnable by construction.
    topics, n_words = _choice(rng, _NONSENSE_TOPICS, n), rng.integers(3, 7, n).tolist()
    syl = rng.integers(0, len(_SYLLABLES), (n, 6, 2)).tolist()
    return _xs(topics), [
        " ".join(_SYLLABLES[a] + _SYLLABLES[b] for a, b in s[:k])
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
    "animal_sound": _lookup(_ANIMALS, _SOUNDS),
    "noise_gibberish": _noise_gibberish,
    "antonym": _lookup(_ANTONYM_A, _ANTONYM_B),
    "plural": _lookup(_SINGULAR, _PLURAL),
    "country_capital": _lookup(_COUNTRIES, _CAPITALS),
    "parity": _parity,
    "reverse_string": _reverse,
    "word_to_number": _word_to_number,
    "noise_lottery": _noise_lottery,
    "element_symbol": _lookup(_ELEMENTS, _SYMBOLS),
    "unit_conversion": _unit_conversion,
    "colour_mixing": _colour_mixing,
    "sort_numbers": _sort_numbers,
    "french_translation": _lookup(_FRENCH, _ENGLISH),
    "count_letter": _count_letter,
    "next_letter": _next_letter,
    "date_format": _date_format,
    "multiplication": _arith(2, 100, lambda a, b: a * b),
}
GENERATORS: dict[str, SkillGen] = {k: _skill(TEMPLATES[k], b) for k, b in _BODIES.items()}
