"""lme4-style model formulas: parse, check against data columns, prepare for an engine.

The structural parsing (fixed terms, ``(expr | g)``, ``||``, ``a/b``) is mixedlm's own
parser; this module adds what lme4 accepts and that parser does not, ``offset(...)``
and a binomial response as ``cbind(successes, failures)`` or
``cbind(successes, trials - successes)``, names grouping factors as lme4 does, and turns
parser exceptions into :class:`GlmmError` lines that name the formula.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from glmm_steps.errors import GlmmError

_OFFSET = re.compile(r"\+?\s*offset\(\s*(log\(\s*)?([A-Za-z_.][\w.]*)\s*\)?\s*\)")
_NAME = r"[A-Za-z_.][\w.]*"
_CBIND = re.compile(rf"^\s*cbind\(\s*({_NAME})\s*,\s*({_NAME})\s*(?:-\s*({_NAME})\s*)?\)\s*~")
# The grouping part of a random term, `| a/b)` or `|| a/b)`, to find lme4's nesting slash.
_BAR_GROUP = re.compile(r"\|\|?([^()|]*)\)")


def _lme4_slash_names(text: str) -> dict[tuple[str, ...], str]:
    """lme4's names for the interactions a nesting slash creates: ``(1 | a/b/c)`` is
    ``(1 | a) + (1 | b:a) + (1 | c:(b:a))``. An interaction the user writes, ``a:b``,
    keeps its own order, so only slash-made groups need a map."""
    names: dict[tuple[str, ...], str] = {}
    for group in _BAR_GROUP.findall(text):
        parts = [p.strip() for p in group.split("/")]
        name = parts[0]
        for depth in range(1, len(parts)):
            inner = f"({name})" if ":" in name else name
            name = f"{parts[depth]}:{inner}"
            names[tuple(parts[: depth + 1])] = name
    return names


@dataclass(frozen=True)
class RandomTerm:
    """One ``(expr | group)`` term: ``group`` is a tuple for an interaction such as
    ``a:b`` (what ``a/b`` expands to); ``slopes`` are the covariates varying by group;
    ``group_name`` is the grouping factor as lme4 names it (``a:b`` as written,
    ``b:a`` for the inner factor of ``a/b``)."""

    group: tuple[str, ...]
    intercept: bool
    slopes: tuple[str, ...]
    correlated: bool
    group_name: str

    def __str__(self) -> str:
        bar = "|" if self.correlated else "||"
        expr = " + ".join(("1",) + self.slopes if self.intercept else ("0",) + self.slopes)
        return f"({expr} {bar} {self.group_name})"


@dataclass(frozen=True)
class Formula:
    """A parsed lme4-style formula.

    ``engine_text`` is the formula without ``offset()`` and with a ``cbind`` response
    replaced by the proportion column ``response`` (fitted with trials as weights,
    as glm and lme4 do internally). ``trials`` holds the two columns of the ``cbind``:
    (successes, failures), or (successes, trials) when ``trials_total`` (the
    ``cbind(s, n - s)`` form)."""

    text: str
    engine_text: str
    response: str
    trials: tuple[str, str] | None
    offset: str | None
    offset_log: bool
    fixed_variables: tuple[str, ...]
    random: tuple[RandomTerm, ...]
    trials_total: bool = False

    def n_trials(self, frame) -> np.ndarray:
        """Binomial trials per row of ``frame`` for a ``cbind`` response (else ones)."""
        if not self.trials:
            return np.ones(len(frame))
        s, other = self.trials
        total = frame[other] if self.trials_total else frame[s] + frame[other]
        return total.to_numpy(dtype=float)

    @property
    def grouping_factors(self) -> tuple[str, ...]:
        """Every column used as (part of) a grouping factor, in formula order."""
        seen: dict[str, None] = {}
        for term in self.random:
            for g in term.group:
                seen.setdefault(g, None)
        return tuple(seen)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every data column the formula reads, in a stable order."""
        cols: dict[str, None] = {}
        for c in (
            (self.trials if self.trials else (self.response,))
            + self.fixed_variables
            + tuple(s for t in self.random for s in t.slopes)
            + self.grouping_factors
            + ((self.offset,) if self.offset else ())
        ):
            cols.setdefault(c, None)
        return tuple(cols)


def parse(text: str) -> Formula:
    """Parse an lme4 formula string into a :class:`Formula`.

    Raises GlmmError naming the formula and the problem when it is malformed or has
    no random-effect term (a mixed model needs at least one ``(expr | group)``)."""
    from mixedlm import parse_formula

    if not isinstance(text, str) or "~" not in text:
        raise GlmmError(f"formula {text!r}: expected 'response ~ terms + (terms | group)'")
    if text.count("(") != text.count(")"):
        raise GlmmError(f"formula {text!r}: unbalanced parentheses")
    offset = None
    offset_log = False
    found = _OFFSET.findall(text)
    if len(found) > 1:
        raise GlmmError(f"formula {text!r}: more than one offset() term")
    if found:
        offset_log, offset = bool(found[0][0]), found[0][1]
    rest = _OFFSET.sub("", text)
    trials = None
    trials_total = False
    m = _CBIND.match(rest)
    response_override = None
    if m:
        trials = (m.group(1), m.group(2))
        if m.group(3):
            if m.group(3) != m.group(1):
                raise GlmmError(
                    f"formula {text!r}: cbind(s, n - s) must subtract the successes "
                    f"'{m.group(1)}', not '{m.group(3)}'"
                )
            trials_total = True
        response_override = f"{m.group(1)}_prop"
        rest = _CBIND.sub(f"{response_override} ~", rest)
    elif rest.lstrip().startswith("cbind("):
        raise GlmmError(
            f"formula {text!r}: a binomial response is cbind(successes, failures) or "
            "cbind(successes, trials - successes), with column names"
        )
    try:
        parsed = parse_formula(rest)
    except ValueError as e:
        raise GlmmError(f"formula {text!r}: {e}") from None
    if not parsed.random:
        raise GlmmError(f"formula {text!r}: no random-effect term such as (1 | group)")
    slash_names = _lme4_slash_names(rest)
    random = []
    for r in parsed.random:
        group = (r.grouping,) if isinstance(r.grouping, str) else tuple(r.grouping)
        random.append(RandomTerm(
            group=group,
            intercept=bool(r.has_intercept),
            slopes=tuple(getattr(e, "name", str(e)) for e in r.expr),
            correlated=bool(r.correlated),
            group_name=slash_names.get(group, ":".join(group)),
        ))
    fixed = tuple(sorted(parsed.fixed_variables))
    return Formula(
        text=text,
        engine_text=" ".join(rest.split()),
        response=response_override or parsed.response,
        trials=trials,
        offset=offset,
        offset_log=offset_log,
        fixed_variables=fixed,
        random=tuple(random),
        trials_total=trials_total,
    )


def check_columns(formula: Formula, columns, where: str) -> None:
    """Raise GlmmError if the formula reads a column absent from ``columns``.

    ``where`` names the data for the message (a dataset name or file path)."""
    have = set(columns)
    for col in formula.columns:
        if col not in have:
            hint = ", ".join(sorted(have))
            raise GlmmError(
                f"formula {formula.text!r} names column '{col}', which {where} lacks "
                f"(columns: {hint})"
            )
