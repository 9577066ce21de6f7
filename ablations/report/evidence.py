"""A published study's evidence: its runs' data in one compact file, `evidence.json.gz`
beside its report in docs/results/<name>/, from which the report is rebuilt.

    make publish-NAME                          # the newest study in the store -> docs/results/NAME/
    make report-NAME FROM=docs/results/NAME    # its report again, from the file alone

The file holds what the report reads (ablations.report.read.StudyData): the study's
parent run (params, tags), and for each run its configuration (params), its tags and
the history of every metric it logged (per epoch and per logged step), with its tuning
runs and, for a tuned study, the study at one shared value. Gzipped JSON, written with
sorted keys and no timestamp, so the same study gives the same bytes.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from ablations.report.read import StudyData
from core.errors import ConfigError

FILE = "evidence.json.gz"
FORMAT = 1


def path_in(folder: Path) -> Path:
    return folder / FILE


def save(study: StudyData, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = path_in(folder)
    text = json.dumps({"format": FORMAT, "study": study.to_json()}, sort_keys=True, separators=(",", ":"))
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode())
    return path


def load(folder: Path, name: str | None = None) -> StudyData:
    """The study in `folder`'s evidence file (`folder` may also name the file itself)."""
    path = folder if folder.is_file() else path_in(folder)
    if not path.is_file():
        raise ConfigError(f"no evidence file {path}: FROM= takes a published study's folder, e.g. FROM=docs/results/{name or 'normalization'}")
    try:
        d = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is not an evidence file ({e}); write one with `make publish-{name or 'NAME'}`") from None
    if d.get("format") != FORMAT:
        raise ConfigError(f"{path} has evidence format {d.get('format')}, this version reads {FORMAT}")
    study = StudyData.from_json(d["study"])
    if name and study.name != name:
        raise ConfigError(f"{path} holds the study of '{study.name}', not '{name}'")
    return study
