"""The vocabularies of the synthetic testbed's skills (:mod:`rnb.data.skills`).

Look-up tables and word lists, kept small so a tiny LM can memorise them within a short run.
"""

from __future__ import annotations

__all__ = [
    "ALPHABET",
    "ANIMALS",
    "ANTONYM_A",
    "ANTONYM_B",
    "BACKWARD_WORDS",
    "CAPITALS",
    "CAPS_ADJ",
    "CAPS_NOUN",
    "COUNTRIES",
    "COUNT_WORDS",
    "ELEMENTS",
    "ENGLISH",
    "FRENCH",
    "MONTHS",
    "NONSENSE_TOPICS",
    "NUMBER_WORDS",
    "ONES",
    "PAINT_A",
    "PAINT_B",
    "PAINT_MIX",
    "PLURAL",
    "SINGULAR",
    "SOUNDS",
    "SYLLABLES",
    "SYMBOLS",
    "TENS",
    "UNITS",
]


def _words(spec: str) -> list[str]:
    return spec.split()


def _table(spec: str) -> list[list[str]]:
    """Parse ``"a:b c:d"`` into columns ``[["a", "c"], ["b", "d"]]``; ``_`` is a space."""
    rows = [[cell.replace("_", " ") for cell in item.split(":")] for item in spec.split()]
    return [list(col) for col in zip(*rows, strict=True)]


# Look-up tables. Kept small so a tiny LM can memorise them within a short run.
COUNTRIES, CAPITALS = _table(
    "France:Paris Japan:Tokyo Italy:Rome Spain:Madrid Germany:Berlin Egypt:Cairo "
    "Kenya:Nairobi Peru:Lima Chile:Santiago Canada:Ottawa Brazil:Brasilia India:New_Delhi "
    "China:Beijing Russia:Moscow Greece:Athens Norway:Oslo Sweden:Stockholm Poland:Warsaw "
    "Austria:Vienna Portugal:Lisbon Ireland:Dublin Cuba:Havana Mexico:Mexico_City "
    "Argentina:Buenos_Aires Australia:Canberra Thailand:Bangkok Vietnam:Hanoi Iran:Tehran "
    "Turkey:Ankara Finland:Helsinki Denmark:Copenhagen Hungary:Budapest"
)
ELEMENTS, SYMBOLS = _table(
    "hydrogen:H helium:He lithium:Li beryllium:Be boron:B carbon:C nitrogen:N oxygen:O "
    "fluorine:F neon:Ne sodium:Na magnesium:Mg aluminium:Al silicon:Si phosphorus:P "
    "sulfur:S chlorine:Cl argon:Ar potassium:K calcium:Ca iron:Fe copper:Cu zinc:Zn "
    "silver:Ag tin:Sn iodine:I gold:Au mercury:Hg lead:Pb uranium:U"
)
ANTONYM_A, ANTONYM_B = _table(
    "hot:cold tall:short happy:sad fast:slow heavy:light early:late rich:poor loud:quiet "
    "wet:dry hard:soft strong:weak thick:thin brave:cowardly clean:dirty empty:full "
    "narrow:wide sharp:blunt smooth:rough young:old cheap:expensive"
)
SINGULAR, PLURAL = _table(
    "child:children mouse:mice goose:geese tooth:teeth foot:feet man:men woman:women "
    "person:people ox:oxen cactus:cacti leaf:leaves knife:knives wolf:wolves box:boxes "
    "bus:buses church:churches city:cities baby:babies tomato:tomatoes hero:heroes "
    "sheep:sheep fish:fish book:books chair:chairs river:rivers"
)
FRENCH, ENGLISH = _table(
    "chat:cat chien:dog maison:house pain:bread eau:water lune:moon soleil:sun arbre:tree "
    "livre:book fromage:cheese pomme:apple voiture:car fleur:flower mer:sea ciel:sky "
    "porte:door jardin:garden oiseau:bird lait:milk main:hand"
)
ANIMALS, SOUNDS = _table(
    "dog:woof cat:meow cow:moo sheep:baa duck:quack pig:oink horse:neigh owl:hoot "
    "lion:roar snake:hiss frog:croak rooster:cock-a-doodle-doo mouse:squeak bee:buzz "
    "donkey:hee-haw crow:caw"
)
PAINT_A, PAINT_B, PAINT_MIX = _table(
    "red:blue:purple red:yellow:orange blue:yellow:green red:white:pink black:white:grey "
    "blue:orange:brown yellow:white:cream red:green:brown"
)
MONTHS = _words(
    "January February March April May June July August September October November December"
)
UNITS = [  # (from, to, factor)
    ("kilometres", "metres", 1000),
    ("kilograms", "grams", 1000),
    ("litres", "millilitres", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("days", "hours", 24),
    ("weeks", "days", 7),
    ("feet", "inches", 12),
]
ONES = _words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
)
TENS = _words("twenty thirty forty fifty sixty seventy eighty ninety")
NUMBER_WORDS = ONES + [t if u == 0 else f"{t}-{ONES[u]}" for t in TENS for u in range(10)]
BACKWARD_WORDS = _words(
    "planet garden window pencil candle rocket basket ladder button pillow marble "
    "carpet violin tunnel puzzle lantern anchor harbor meadow castle"
)
CAPS_ADJ = _words("quiet brave sleepy clever gentle rusty tiny golden")
CAPS_NOUN = _words("river falcon engine meadow teapot harbor wizard kettle")
COUNT_WORDS = _words(
    "banana balloon mississippi coffee committee bookkeeper pepper assessment "
    "success parallel referee cinnamon bubble giraffe tattoo"
)
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
NONSENSE_TOPICS = _words("moon kettle lighthouse volcano comet glacier orchard fog")
SYLLABLES = _words("za ko vi ru me pa lo ti xu bre fli gor nax qui dro ple sku tam wek yol fen hib")
