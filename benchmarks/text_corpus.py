"""Build a real-text JSONL corpus offline: docstrings of the installed Python packages.

Each record is one docstring (module, class or function) of at least ``--min-chars``
characters, ``{"text": ..., "domain": <top-level package>}``; the ``--domains`` packages with
the most docstring text become the domains (m = 32 by default), each capped at
``--per-domain`` records so that no package dominates. Real English + code vocabulary, no
network, deterministic for a given environment (files are walked in sorted order). Used by
``benchmarks/overhead.py --data`` to measure R&B on a real-vocabulary corpus with the
default 4k BPE tokenizer.

    python benchmarks/text_corpus.py --out /tmp/corpus.jsonl [--domains 32]
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import sysconfig
from collections import defaultdict
from pathlib import Path

SKIP = {"tests", "test", "_vendor", "vendored", "__pycache__"}


def docstrings(path: Path, min_chars: int) -> list[str]:
    """Docstrings of at least ``min_chars`` characters in one source file (none on errors)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    nodes = [tree, *ast.walk(tree)]
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    out = []
    for node in nodes:
        if isinstance(node, kinds):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= min_chars:
                out.append(doc)
    return list(dict.fromkeys(out))  # a module docstring is seen twice (tree + walk)


def collect(root: Path, min_chars: int) -> dict[str, list[str]]:
    """Docstrings per top-level package under ``root`` (site-packages)."""
    per: dict[str, list[str]] = defaultdict(list)
    for pkg in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isidentifier()):
        for path in sorted(pkg.rglob("*.py")):
            if SKIP.intersection(path.relative_to(root).parts):
                continue
            per[pkg.name].extend(docstrings(path, min_chars))
    return per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--domains", type=int, default=32)
    ap.add_argument("--per-domain", type=int, default=1500)
    ap.add_argument("--min-chars", type=int, default=200)
    ap.add_argument("--site", type=Path, default=Path(sysconfig.get_paths()["purelib"]))
    args = ap.parse_args()
    per = collect(args.site, args.min_chars)
    ranked = sorted(per, key=lambda k: -sum(map(len, per[k])))[: args.domains]
    if len(ranked) < args.domains:
        sys.exit(f"only {len(ranked)} packages with docstrings under {args.site}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with args.out.open("w", encoding="utf-8") as f:
        for name in sorted(ranked):
            for text in per[name][: args.per_domain]:
                f.write(json.dumps({"text": text, "domain": name}) + "\n")
                n += 1
    sizes = {k: min(len(per[k]), args.per_domain) for k in sorted(ranked)}
    print(f"{n} records, {len(ranked)} domains -> {args.out}")
    print(", ".join(f"{k} {v}" for k, v in sizes.items()))


if __name__ == "__main__":
    main()
