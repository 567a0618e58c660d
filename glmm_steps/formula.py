"""lme4-style model formulas: parse, check against data columns, prepare for an engine.

The structural parsing (fixed terms, ``(expr | g)``, ``||``, ``a/b``) is mixedlm's own
parser; this module adds what lme4 accepts and that parser does not, ``offset(...)``
and a binomial response as ``cbind(successes, failures)`` or
``cbind(successes, trials - successes)``, names grouping factors as lme4 does, and turns
parser exceptions into :class:`GlmmError` lines that name the formula.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import numpy as np

from glmm_steps.errors import GlmmError

_OFFSET = re.compile(r"\+?\s*offset\(\s*(log\(\s*)?([A-Za-z_.][\w.]*)\s*\)?\s*\)")
# mixedlm's parser speaks in token names; users read symbols.
_TOKEN_WORDS = {
    "TILDE": "'~'", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "POWER": "'^'", "COLON": "':'",
    "SLASH": "'/'", "PIPE": "'|'", "DOUBLE_PIPE": "'||'", "LPAREN": "'('", "RPAREN": "')'",
    "NUMBER": "a number", "IDENTIFIER": "a column name", "EOF": "the end of the formula",
}
_TOKEN = re.compile(r"(?:TokenType\.)?\b(" + "|".join(_TOKEN_WORDS) + r")\b")
_POSITION = re.compile(r" at position (\d+)")
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
    def trials_text(self) -> str:
        """The cbind response as written: ``cbind(s, f)`` or ``cbind(s, n - s)``."""
        s, other = self.trials
        return f"cbind({s}, {other} - {s})" if self.trials_total else f"cbind({s}, {other})"

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
    problem = _structure_problem(text)
    if problem:
        raise GlmmError(f"formula {text!r}: {problem}")
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
    except (ValueError, TypeError, IndexError, RecursionError) as e:
        raise GlmmError(f"formula {text!r}: {_in_words(str(e), rest)}") from None
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
    problem = _term_problem(response_override or parsed.response, trials, fixed, random, offset)
    if problem:
        raise GlmmError(f"formula {text!r}: {problem}")
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


def _structure_problem(text: str) -> str | None:
    """What is wrong with the shape of ``text`` (parentheses, sides of '~', empty
    random terms), in words, or None. Checked before the engine's parser so the
    common mistakes get a message that says what to write instead."""
    if text.count("~") > 1:
        return "more than one '~'"
    lhs, rhs = text.split("~")
    if not lhs.strip():
        return "no response before '~'"
    if not rhs.strip():
        return "no terms after '~'"
    opened: list[int] = []
    groups: list[tuple[int, int]] = []
    for i, ch in enumerate(text):
        if ch == "(":
            opened.append(i)
        elif ch == ")":
            if not opened:
                return f"unbalanced parentheses: ')' at character {i + 1} has no matching '('"
            start = opened.pop()
            if not opened:
                groups.append((start, i))
    if opened:
        return f"unbalanced parentheses: '(' at character {opened[-1] + 1} is never closed"
    for start, end in groups:
        inner = text[start + 1:end]
        term = " ".join(text[start:end + 1].split())
        if not inner.strip():
            return f"empty parentheses '{term}'"
        if "|" not in inner:
            continue
        left, _, right = inner.partition("|")
        right = right.lstrip("|")
        if not left.strip():
            return f"empty random term '{term}': write (1 | group) for a random intercept"
        if not right.strip():
            return f"random term '{term}' names no grouping factor after '|'"
    return None


def _term_problem(response: str, trials, fixed, random, offset) -> str | None:
    """Terms that parse but cannot be meant: the response used as a predictor, a
    random term that estimates nothing, the same random term twice."""
    outcome = set(trials or (response,))
    for term in random:
        used = outcome & (set(term.group) | set(term.slopes))
        if used:
            return f"the response '{used.pop()}' also appears in the random term for '{term.group_name}'"
        if not term.intercept and not term.slopes:
            return f"empty random term for '{term.group_name}': it has neither an intercept nor slopes"
    used = outcome & (set(fixed) | {offset})
    if used:
        return f"the response '{used.pop()}' also appears on the right of '~'"
    seen = set()
    for term in random:
        key = (term.group, term.intercept, term.slopes)
        if key in seen:
            return f"the random term for '{term.group_name}' appears twice"
        seen.add(key)
    return None


def _in_words(message: str, text: str) -> str:
    """The engine parser's message with token names as symbols and a position
    replaced by the text found there (positions would not match the user's
    formula once offset() or cbind() are rewritten)."""
    def near(m: re.Match) -> str:
        pos = int(m.group(1))
        return f" near {text[pos:pos + 12].strip()!r}" if pos < len(text.rstrip()) else ""

    message = _TOKEN.sub(lambda m: _TOKEN_WORDS[m.group(1)], _POSITION.sub(near, message))
    return message[:1].lower() + message[1:]


def check_columns(formula: Formula, columns, where: str) -> None:
    """Raise GlmmError if the formula reads a column absent from ``columns``.

    ``where`` names the data for the message (a dataset name or file path)."""
    have = [str(c) for c in columns]
    for col in formula.columns:
        if col not in have:
            close = difflib.get_close_matches(col, have, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"columns: {', '.join(sorted(have))}"
            raise GlmmError(f"formula {formula.text!r} names column '{col}', which {where} lacks ({hint})")
