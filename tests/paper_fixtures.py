"""Tiny local stand-ins for the paper's datasets, in each one's real schema (no network).

Each writer makes a JSONL file whose records carry exactly the fields the dataset has (and
the paper experiment reads): Dolly-15k (instruction, context, response, category),
Super-NaturalInstructions (task_name, id, definition, inputs, targets, category) and s1K-1.1
(question, solution, cot_type, source_type, deepseek_thinking_trajectory, deepseek_attempt).
Domains use distinct vocabularies, so Regroup finds structure in them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

#: domain -> words its texts are drawn from.
TOPICS = {
    "closed_qa": ["river", "bridge", "valley", "harbor", "canal", "island", "delta"],
    "brainstorming": ["idea", "party", "garden", "recipe", "gift", "hobby", "weekend"],
    "classification": ["mammal", "reptile", "fish", "bird", "insect", "amphibian", "spider"],
    "summarization": ["report", "meeting", "article", "chapter", "speech", "review", "memo"],
}


def _words(rng: random.Random, domain: str, n: int) -> str:
    return " ".join(rng.choice(TOPICS[domain]) for _ in range(n))


def _dolly(rng: random.Random, domain: str, i: int) -> dict:
    return {
        "instruction": f"Question {i}: what about the {_words(rng, domain, 4)}?",
        "context": _words(rng, domain, 6) if i % 2 else "",  # Dolly's context is often empty
        "response": f"The answer is {_words(rng, domain, 5)}.",
        "category": domain,
    }


def _natinst(rng: random.Random, domain: str, i: int) -> dict:
    task = f"task{100 + list(TOPICS).index(domain)}_{domain}"
    return {
        "task_name": task,
        "id": f"{task}-{i}",
        "definition": f"In this task you handle {_words(rng, domain, 3)}.",
        "inputs": f"Input: {_words(rng, domain, 6)}",
        "targets": _words(rng, domain, 3),
        "category": domain.replace("_", " ").title(),
    }


def _s1(rng: random.Random, domain: str, i: int) -> dict:
    return {
        "question": f"Problem {i}: compute the {_words(rng, domain, 5)}.",
        "solution": _words(rng, domain, 2),
        "cot_type": "math",
        "source_type": f"source/{domain}",
        "deepseek_thinking_trajectory": f"Let me think. {_words(rng, domain, 12)}",
        "deepseek_attempt": f"Answer: {_words(rng, domain, 2)}",
    }


WRITERS: dict[str, Callable[[random.Random, str, int], dict]] = {
    "dolly": _dolly,
    "supnatinst": _natinst,
    "s1": _s1,
}


def write_fixture(kind: str, path: Path, per_domain: int = 60, seed: int = 0) -> Path:
    """Write ``per_domain`` records of each of the 4 domains in ``kind``'s schema to ``path``."""
    rng = random.Random(seed)
    make = WRITERS[kind]
    rows = [make(rng, d, i) for i in range(per_domain) for d in TOPICS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
