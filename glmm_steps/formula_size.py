"""How many fixed-effect terms a formula expands to, counted before it is parsed.

``a*b*c`` stands for 7 terms and ``c1*...*c30`` for a billion: a formula is text a
user writes, so its expansion is bounded before anything builds it. This is one pass
over the formula's fixed part with R's term algebra on sets of variable names
(``a*b`` = a + b + a:b, ``a/b`` = a + a:b, ``(a+b)^2``, ``-`` removes terms; random
terms ``(... | g)`` and ``offset(...)`` add none), and it stops as soon as the count
passes the bound, so its cost is bounded too. It only counts: a text it does not
read as a formula gives ``None`` and the formula parser reports the problem.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r"\s*(?:(?P<name>[A-Za-z._][A-Za-z0-9._]*|`[^`]*`)|(?P<number>\d+(?:\.\d*)?)"
    r"|(?P<op>%[^%]*%|\|\||[-+*/:^()|,~]))"
)
_MAX_NESTING = 100


class _Unread(Exception):
    """The text is not a formula this pass reads."""


class _TooMany(Exception):
    """The expansion passed the bound."""


def fixed_terms(text: str, bound: int) -> int | None:
    """The number of distinct fixed-effect terms (the intercept not counted) of the
    formula ``text``, or ``bound + 1`` as soon as it passes ``bound``; None when
    ``text`` is not a formula this count reads (the parser gives the error). Each
    term is at least one column of the fixed-effect model matrix."""
    try:
        tokens = _tokens(text)
        if "~" not in tokens:
            return None
        rhs = tokens[tokens.index("~") + 1 :]
        terms, rest = _Reader(rhs, bound).sum(0)
        if rest != len(rhs):
            return None
    except _TooMany:
        return bound + 1
    except (_Unread, IndexError, ValueError):
        return None
    return sum(1 for t in terms if t)


def _tokens(text: str) -> list[str]:
    """Names, numbers and operators; a function call such as ``log(x)`` is one name
    (its arguments are not formula operators), ``offset(...)`` the token ``offset``."""
    out: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _Unread
        token, pos = m.group().strip(), m.end()
        if m.group("name") and text[pos : pos + 1] == "(":
            depth, start = 0, pos
            while True:  # the call's balanced parentheses
                if pos >= len(text):
                    raise _Unread
                depth += {"(": 1, ")": -1}.get(text[pos], 0)
                pos += 1
                if depth == 0:
                    break
            # marked with a leading NUL, which no formula text holds
            out.append("\0offset" if token == "offset" else "\0" + token + text[start:pos])
            continue
        out.append(token)
    return out


class _Reader:
    """Recursive descent over the tokens, by R's precedence: ``+ -`` < ``* /`` <
    ``: %in%`` < ``^``. Each method returns (set of terms, next position)."""

    def __init__(self, tokens: list[str], bound: int):
        self.tokens, self.bound = tokens, bound

    def _check(self, terms: set) -> set:
        if sum(1 for t in terms if t) > self.bound:
            raise _TooMany
        return terms

    def _peek(self, pos: int) -> str | None:
        return self.tokens[pos] if pos < len(self.tokens) else None

    def sum(self, pos: int, nesting: int = 0) -> tuple[set, int]:
        terms: set = set()
        sign = "+"
        if self._peek(pos) in ("+", "-"):
            sign, pos = self.tokens[pos], pos + 1
        while True:
            part, pos = self.product(pos, nesting)
            terms = terms - part if sign == "-" else self._check(terms | part)
            if self._peek(pos) not in ("+", "-"):
                return terms, pos
            sign, pos = self.tokens[pos], pos + 1

    def product(self, pos: int, nesting: int) -> tuple[set, int]:
        terms, pos = self.interaction(pos, nesting)
        while self._peek(pos) in ("*", "/"):
            op = self.tokens[pos]
            right, pos = self.interaction(pos + 1, nesting)
            if op == "*":
                terms = self._check(terms | right | self._cross(terms, right))
            else:  # a/b = a + a:b, b nested within all of a
                outer = frozenset().union(*terms)
                terms = self._check(terms | self._cross({outer}, right))
        return terms, pos

    def interaction(self, pos: int, nesting: int) -> tuple[set, int]:
        terms, pos = self.power(pos, nesting)
        while self._peek(pos) == ":" or (self._peek(pos) or "").startswith("%"):
            right, pos = self.power(pos + 1, nesting)
            terms = self._cross(terms, right)
        return terms, pos

    def power(self, pos: int, nesting: int) -> tuple[set, int]:
        terms, pos = self.primary(pos, nesting)
        if self._peek(pos) == "^":
            n = int(float(self.tokens[pos + 1]))
            base, pos = terms, pos + 2
            for _ in range(max(n, 1) - 1):
                terms = self._check(terms | self._cross(terms, base))
        return terms, pos

    def primary(self, pos: int, nesting: int) -> tuple[set, int]:
        token = self.tokens[pos]
        if token == "(":
            if nesting >= _MAX_NESTING:
                raise _Unread
            end = self._closing(pos)
            if "|" in self.tokens[pos + 1 : end] or "||" in self.tokens[pos + 1 : end]:
                return set(), end + 1  # a random term: no fixed-effect terms
            terms, inner = self.sum(pos + 1, nesting + 1)
            if inner != end:
                raise _Unread
            return terms, end + 1
        if token == "\0offset":
            return set(), pos + 1
        if token[0] in "0123456789":
            return {frozenset()}, pos + 1  # 1 or 0: the intercept, not a column to count
        if token[0].isalpha() or token[0] in "._`\0":
            return {frozenset([token])}, pos + 1
        raise _Unread

    def _closing(self, pos: int) -> int:
        depth = 0
        for i in range(pos, len(self.tokens)):
            depth += {"(": 1, ")": -1}.get(self.tokens[i], 0)
            if depth == 0:
                return i
        raise _Unread

    def _cross(self, left: set, right: set) -> set:
        """Every union of a term of ``left`` with a term of ``right`` (a:b), stopping
        once there are more than the bound."""
        out: set = set()
        for a in left:
            for b in right:
                out.add(a | b)
            self._check(out)
        return out
