"""The README's and docs/' promises that can rot silently: files they link to, make targets they
name, and the README's table of toggles against the registries."""

from __future__ import annotations

import re

import pytest

from core.paths import ROOT
from data.augment import TRAIN_AUGMENTS
from data.registry import DATASETS
from lightning_modules.layers import ACTIVATIONS, NORMS, POOLS
from lightning_modules.networks import ARCHS, INITS

CONFIG_DIR = ROOT / "configs"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose(page) -> str:
    return re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # sample output quotes links relative to reports/


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_linked_file_is_in_the_repository(page):
    targets = {t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", _prose(page)) if "://" not in t and not t.startswith("#")}
    missing = sorted(t for t in targets if t and not (page.parent / t).exists())
    assert not missing, f"{page.name} links to files that are not in the repository: {missing}"


def test_the_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_make_target_named_exists(page):
    text = page.read_text()
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z%-]+):", makefile, re.M))
    ablations = {p.stem for p in (CONFIG_DIR / "ablations").glob("*.yaml")}
    for name in set(re.findall(r"`make ([a-z][a-z0-9_-]*)", text)) | set(re.findall(r"^make ([a-z][a-z0-9_-]*)", text, re.M)):
        for prefix in ("ablate-", "report-", "backfill-", "power-", "publish-"):
            if name.startswith(prefix) and name != "ablate-all":
                stem = name[len(prefix) :]
                assert f"{prefix}%" in targets, f"{page.name} names make {name}, but the Makefile has no {prefix}% rule"
                if not stem:  # `make report-<name>`: the pattern rule is the promise
                    break
                # ablate-elu is the README's worked example of adding a file
                assert stem in ablations or stem == "elu", f"{page.name} names make {name}, but configs/ablations/{stem}.yaml does not exist"
                break
        else:
            assert name in targets, f"{page.name} names make {name}, which the Makefile does not define"


@pytest.mark.parametrize(
    "key, registry",
    [("model.arch", ARCHS), ("model.activation", ACTIVATIONS), ("model.norm", NORMS), ("model.pool", POOLS), ("model.init", INITS),
     ("data.augment", TRAIN_AUGMENTS), ("data.name", DATASETS)],
)  # fmt: skip
def test_the_toggles_table_lists_every_registered_value(key, registry):
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(f"| `{key}` |"))
    listed = set(re.findall(r"`([^`]+)`", row.split("|")[2]))
    assert listed >= set(registry), f"README's row for {key} lacks {sorted(set(registry) - listed)}"
    assert not {v for v in listed if re.fullmatch(r"[a-z_]+", v)} - set(registry), f"README's row for {key} lists values the registry lacks"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_command_named_runs(page):
    """Each `python -m MODULE` a page names is a module that runs as a command (a package needs its __main__)."""
    import importlib.util

    for module in set(re.findall(r"python -m ([a-zA-Z_][\w.]*[a-zA-Z_])", page.read_text())):
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{page.name} names python -m {module}, which does not exist"
        if spec.submodule_search_locations:  # a package
            assert importlib.util.find_spec(f"{module}.__main__"), f"{page.name} names python -m {module}, a package without __main__"
