"""`tools/mutation.py`: a re-run by name keeps the first run's outcomes in the score.

mutmut rewrites its `.meta` records with the named mutants only when run by name, so the
re-run's tally once dropped every mutant the first run had killed (a complete `capture` run
re-run with new tests read "216/282 killed, 1310 not checked" instead of 1526/1592).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mutation():
    spec = importlib.util.spec_from_file_location(
        "rnb_mutation_tool", ROOT / "tools" / "mutation.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    del sys.modules[spec.name]


def test_a_rerun_keeps_earlier_outcomes_and_cut_off_mutants(mutation) -> None:
    earlier = {"a": "killed", "b": "survived", "c": "survived", "d": "not checked", "e": "no tests"}
    rerun = {
        "a": "not checked",
        "b": "killed",
        "c": "not checked",
        "d": "not checked",
        "e": "survived",
    }
    merged = mutation.merge_outcomes(earlier, rerun, ["b", "c", "e"])
    # b killed now; c cut off by the time limit keeps "survived"; a and d untouched
    assert merged == {
        "a": "killed",
        "b": "killed",
        "c": "survived",
        "d": "not checked",
        "e": "survived",
    }
    row = mutation._tally("m", Path("w"), 1.0, 0, merged)
    assert (row["killed"], row["total"], row["not_checked"]) == (2, 4, 1)
    assert row["survivors"] == {"c": "survived", "e": "survived"}


def test_the_ledger_outranks_mutmuts_records(mutation, tmp_path: Path) -> None:
    meta = tmp_path / "mutants" / "src" / "x.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": {"a": 1, "b": None}}))
    assert mutation._outcomes(tmp_path) == {"a": "killed", "b": "not checked"}
    (tmp_path / "outcomes.json").write_text(json.dumps({"a": "killed", "b": "killed"}))
    assert mutation._outcomes(tmp_path) == {"a": "killed", "b": "killed"}


@pytest.mark.parametrize(
    ("given", "module"),
    [
        ("rnb_math", "rnb_math"),
        ("src/rnb/balance/rnb_math.py", "rnb_math"),
        ("./src/rnb/balance/strategies/odm.py", "strategies"),
        ("src/rnb/balance/strategies/", "strategies"),
        ("src/rnb/balance/sandbox.py", "detours"),
    ],
)
def test_a_module_is_named_or_one_of_its_paths(mutation, given: str, module: str) -> None:
    assert mutation._resolve(given) == module


@pytest.mark.parametrize("given", ["a", "balance", "src", ".py", "regroup", "rnb_mat"])
def test_a_partial_name_is_refused_not_matched(mutation, given: str) -> None:
    """Substrings once picked the first module whose path contained them (``a`` ran
    ``rnb_math``): a typo must fail, naming the choices."""
    with pytest.raises(SystemExit, match=r"unknown; choose from \['assign', "):
        mutation._resolve(given)
