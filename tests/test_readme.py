"""The README's promises that can rot silently: files it links to, make targets it names."""

from __future__ import annotations

import re

from core.paths import ROOT

CONFIG_DIR = ROOT / "configs"

README = (ROOT / "README.md").read_text()
PROSE = re.sub(r"```.*?```", "", README, flags=re.S)  # sample output quotes links relative to reports/


def test_every_linked_file_is_in_the_repository():
    targets = {t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", PROSE) if "://" not in t and not t.startswith("#")}
    assert targets, "expected the README to link to files (screenshots, reports)"
    missing = sorted(t for t in targets if not (ROOT / t).exists())
    assert not missing, f"README links to files that are not in the repository: {missing}"


def test_every_make_target_named_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z%-]+):", makefile, re.M))
    ablations = {p.stem for p in (CONFIG_DIR / "ablations").glob("*.yaml")}
    for name in set(re.findall(r"`make ([a-z][a-z0-9_-]*)", README)) | set(re.findall(r"^make ([a-z][a-z0-9_-]*)", README, re.M)):
        for prefix in ("ablate-", "report-", "backfill-", "power-"):
            if name.startswith(prefix) and name != "ablate-all":
                stem = name[len(prefix) :]
                assert f"{prefix}%" in targets
                if not stem:  # `make report-<name>`: the pattern rule is the promise
                    break
                # ablate-elu is the README's worked example of adding a file
                assert stem in ablations or stem == "elu", f"README names make {name}, but configs/ablations/{stem}.yaml does not exist"
                break
        else:
            assert name in targets, f"README names make {name}, which the Makefile does not define"
