"""Two-level factorial designs for ablation files: the cells to train and what each
effect is aliased with.

    factors:                      # each a config key with two levels: low, then high
      model.norm: [lrn, batchnorm]
      model.dropout: [0.0, 0.5]
      data.augment: [none, paper]
      model.pool: [non_overlapping, overlapping]
    design: full                  # 2^k cells; or {fraction: p} (2^(k-p) cells), or
                                  # {resolution: R} (the fewest cells that reach R)

Fractions use the minimum-aberration generators of the NIST/SEMATECH e-Handbook of
Statistical Methods, section 5.3.3.4.7 ("Summary tables of useful fractional factorial
designs"), the same as Montgomery's Design and Analysis of Experiments, table 8.14;
pyDOE3 builds the design matrix from them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import ConfigError

LETTERS = "abcdefg"
# k factors -> {p: generator string for pyDOE3.fracfact}: the 2^(k-p) fractions.
GENERATORS = {
    3: {1: "a b ab"},
    4: {1: "a b c abc"},
    5: {1: "a b c d abcd", 2: "a b c ab ac"},
    6: {1: "a b c d e abcde", 2: "a b c d abc bcd", 3: "a b c ab ac bc"},
    7: {1: "a b c d e f abcdef", 2: "a b c d e abcd abde", 3: "a b c d abc bcd acd", 4: "a b c ab ac bc abc"},
}
ROMAN = {3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII"}


def defining_words(generators: str) -> list[frozenset[str]]:
    """The words of the defining relation (I = ...): every product of the generators'
    words (a generated factor times its generator), as sets of letters."""
    words = [frozenset(g) | {LETTERS[i]} for i, g in enumerate(generators.split()) if len(g) > 1]
    out = set()
    for r in range(1, len(words) + 1):
        for combo in itertools.combinations(words, r):
            product: frozenset[str] = frozenset()
            for w in combo:
                product = product ^ w
            out.add(product)
    return sorted(out, key=lambda w: (len(w), sorted(w)))


def resolution(generators: str | None) -> int | None:
    """The length of the shortest word of the defining relation; None for a full design."""
    words = defining_words(generators) if generators else []
    return min(len(w) for w in words) if words else None


@dataclass
class Design:
    factors: dict[str, tuple[Any, Any]]  # config key -> (low, high)
    matrix: np.ndarray  # cells x factors, in -1 / +1
    generators: str | None = None  # None: the full design

    @property
    def k(self) -> int:
        return len(self.factors)

    @property
    def resolution(self) -> int | None:
        return resolution(self.generators)

    @property
    def short(self) -> dict[str, str]:
        """key -> the short name its cells and effects use (the key's last part)."""
        return {key: key.rsplit(".", 1)[-1] for key in self.factors}

    def cells(self) -> dict[str, dict[str, Any]]:
        """Cell name -> its config overrides, in design order."""
        out = {}
        for row in self.matrix:
            values = {key: levels[int(x > 0)] for (key, levels), x in zip(self.factors.items(), row, strict=True)}
            out["_".join(f"{self.short[k]}-{v}" for k, v in values.items())] = values
        return out

    def describe(self) -> str:
        n = len(self.matrix)
        if self.generators is None:
            return f"full 2^{self.k} design: {n} cells"
        p = self.k - int(np.log2(n))
        return f"2^({self.k}-{p}) fractional design of resolution {ROMAN.get(self.resolution, self.resolution)}: {n} cells"

    def terms(self) -> list[tuple[str, ...]]:
        """Main effects and two-factor interactions, as tuples of keys."""
        keys = list(self.factors)
        return [(k,) for k in keys] + list(itertools.combinations(keys, 2))

    def column(self, term: tuple[str, ...]) -> np.ndarray:
        idx = [list(self.factors).index(k) for k in term]
        return np.prod(self.matrix[:, idx], axis=1)

    def alias_groups(self) -> list[list[tuple[str, ...]]]:
        """Main effects and two-factor interactions grouped by identical (or opposite)
        columns: the effects in a group cannot be told apart by this design. The first
        of each group is the one estimated."""
        groups: list[list[tuple[str, ...]]] = []
        reps: list[np.ndarray] = []
        for term in self.terms():
            col = self.column(term)
            for group, rep in zip(groups, reps, strict=True):
                if np.array_equal(col, rep) or np.array_equal(col, -rep):
                    group.append(term)
                    break
            else:
                groups.append([term])
                reps.append(col)
        return groups

    def alias_lines(self) -> list[str]:
        """The defining relation and the aliases among main effects and two-factor
        interactions, in the factors' short names (empty for a full design)."""
        if self.generators is None:
            return []
        names = dict(zip(LETTERS, self.short.values(), strict=False))
        relation = " = ".join(["I"] + ["·".join(names[c] for c in sorted(w)) for w in defining_words(self.generators)])
        lines = [f"defining relation: {relation}"]
        for group in self.alias_groups():
            if len(group) > 1:
                lines.append(" = ".join(term_name(t, self.short) for t in group))
        return lines


def term_name(term: tuple[str, ...], short: dict[str, str]) -> str:
    return " x ".join(short[k] for k in term)


def parse_design(factors: Any, design: Any, where: str) -> Design:
    """The design an ablation file asks for; a bad block raises ConfigError naming it."""
    from pyDOE3 import ff2n, fracfact

    if not isinstance(factors, dict) or len(factors) < 2:
        raise ConfigError(f"{where}: 'factors' must map at least two config keys to their two levels, e.g. factors: {{model.norm: [lrn, batchnorm]}}")
    levels = {}
    for key, value in factors.items():
        if not isinstance(value, list) or len(value) != 2 or value[0] == value[1]:
            raise ConfigError(f"{where}: factor '{key}' needs exactly two different levels, [low, high]; it has {value!r}")
        levels[str(key)] = (value[0], value[1])
    k = len(levels)
    if len({key.rsplit(".", 1)[-1] for key in levels}) < k:
        raise ConfigError(f"{where}: two factors end in the same name ({', '.join(levels)}); cells are named by the keys' last parts")
    if k > 7:
        raise ConfigError(f"{where}: at most 7 factors (2^7 = 128 cells in full); this design has {k}")
    if design in (None, "full"):
        return Design(levels, ff2n(k))
    if not isinstance(design, dict) or not design or set(design) - {"fraction", "resolution"}:
        raise ConfigError(f"{where}: 'design' must be full, {{fraction: p}} or {{resolution: R}}, not {design!r}")
    table = GENERATORS.get(k, {})
    p, want = design.get("fraction"), design.get("resolution")
    if p is None and want is None:
        raise ConfigError(f"{where}: 'design' must be full, {{fraction: p}} or {{resolution: R}}, not {design!r}")
    if want is not None and (not isinstance(want, int) or isinstance(want, bool)):
        raise ConfigError(f"{where}: design.resolution is a whole number (3 for III, 4 for IV, 5 for V), not {want!r}")
    if p is None:
        fits = [q for q in sorted(table, reverse=True) if resolution(table[q]) >= want]
        if not fits:
            best = f"the best fraction, 2^({k}-1), has resolution {ROMAN.get(resolution(table[1]), '?')}" if table else "no fraction exists"
            raise ConfigError(f"{where}: no fractional design of {k} factors reaches resolution {want!r} ({best}); use design: full ({2**k} cells)")
        p = fits[0]
    if p not in table:
        raise ConfigError(f"{where}: design.fraction must be one of {sorted(table) or 'none (too few factors)'} for {k} factors, not {p!r}")
    if want is not None and resolution(table[p]) < want:
        got = ROMAN[resolution(table[p])]
        raise ConfigError(f"{where}: the 2^({k}-{p}) design has resolution {got}, below the {want!r} asked for; ask for a smaller fraction")
    return Design(levels, fracfact(table[p]), table[p])
