"""signing, verify and diagnosis import nothing beyond the standard library (and each other).

A receiver must be able to use them without the server's dependencies: each is imported in a
fresh, isolated interpreter where any other import raises.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TypedDict, cast

import pytest

CHILD = """
import json, sys
from importlib.abc import MetaPathFinder


class OnlyStandardLibrary(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top == "hookstage":
            return None  # let the usual finders do their work
        raise ImportError(f"blocked: {name} is not in the standard library")


sys.meta_path.insert(0, OnlyStandardLibrary())
try:
    import aiohttp  # installed here: the blocker must stop it, or this test proves nothing
except ImportError:
    blocked = True
else:
    blocked = False
before = set(sys.modules)
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({
    "blocked": blocked,
    "hookstage": sorted(m for m in sys.modules if m.partition(".")[0] == "hookstage"),
    "new_outside_stdlib": sorted(
        m for m in set(sys.modules) - before
        if m.partition(".")[0] not in sys.stdlib_module_names
        and m.partition(".")[0] != "hookstage"
    ),
}))
"""


class Imported(TypedDict):
    blocked: bool
    hookstage: list[str]
    new_outside_stdlib: list[str]


def import_isolated(*modules: str) -> Imported:
    completed = subprocess.run(
        [sys.executable, "-I", "-c", CHILD, *modules],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return cast(Imported, json.loads(completed.stdout))


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("hookstage.signing", []),
        ("hookstage.verify", []),
        ("hookstage.diagnosis", ["hookstage.signing", "hookstage.verify"]),
    ],
)
def test_module_needs_only_the_standard_library(module: str, allowed: list[str]) -> None:
    result = import_isolated(module)
    assert result["blocked"] is True
    assert result["new_outside_stdlib"] == []
    loaded = set(result["hookstage"])
    assert module in loaded
    assert loaded - {"hookstage", module} <= set(allowed)


def test_all_three_together_pull_in_no_other_hookstage_module() -> None:
    result = import_isolated("hookstage.signing", "hookstage.verify", "hookstage.diagnosis")
    assert result["hookstage"] == [
        "hookstage",
        "hookstage.diagnosis",
        "hookstage.signing",
        "hookstage.verify",
    ]
