"""A small, safe expression language for outcome metrics: when is a piece of feedback *bad*?

An outcome metric names a condition over what users reported about a request and what the
model answered, e.g. ``label == 'down'``, ``abs(value - prediction) > 5``, ``score < 0.7`` or
``attributes.complaint == 'yes'``. Nothing here is Python: the text is tokenised and parsed
by this module into a typed tree, checked (names, types, function arities) when the plan is
read, and evaluated by walking that tree. No ``eval``, no attribute access on Python objects,
no loops, no regular expressions; evaluation is linear in the expression's size (at most
:data:`MAX_SOURCE` characters, nested at most :data:`MAX_DEPTH` deep) and in the length of the
texts it reads.

**Names.**

===================  =======  ===============================================================
``label``            text     the feedback's label (missing when it has none)
``value``            number   the feedback's numeric value (missing when it has none)
``score``            number   the same as ``value`` (reads better for a judge's score)
``prediction``       either   the model's prediction: text where text is expected, a number
                              where a number is (missing when it is not one)
``attributes.NAME``  text     a feedback attribute (``attributes['any key']`` for other keys)
===================  =======  ===============================================================

**Operators**, loosest first: ``or``, ``and``, ``not``; comparisons ``==  !=  <  <=  >  >=``
and ``in [...]`` / ``not in [...]`` (a list of literals); ``+ -``; ``* /``; unary ``-``.
Ordering compares numbers only; ``==``/``!=`` compare two numbers, two texts or two
conditions; comparisons do not chain (write ``0 < value and value < 5``). Literals: numbers
(``5``, ``0.7``, ``1e3``), texts in single or double quotes (``\\'``, ``\\"``, ``\\\\``,
``\\n``, ``\\t`` escapes), ``true``, ``false``.

**Functions:** ``abs(n)``, ``min(n, n, ...)``, ``max(n, n, ...)``, ``round(n)``,
``lower(t)``, ``upper(t)``, ``trim(t)``, ``len(t)``, ``number(t)`` (text to number, missing
when it is not a finite number), ``contains(t, part)``, ``startswith(t, part)``,
``endswith(t, part)``, ``exists(x)`` (true when ``x`` is not missing) and
``coalesce(x, y, ...)`` (the first that is not missing, e.g.
``coalesce(attributes.complaint, 'no') == 'yes'``).

**Missing values.** Feedback need not carry every field. Anything computed from a missing
field is missing, except through ``exists`` and ``coalesce``; ``and``/``or`` follow Kleene's
rules (``false and missing`` is false, ``true or missing`` is true); so does a division by
zero or a result too large to represent. A condition that comes out missing means "this
feedback says nothing about this metric": it is not counted (it is neither good nor bad).

>>> bad = compile_condition("abs(value - prediction) > 5")
>>> bad(Outcome(value=12.0, prediction="4.5")), bad(Outcome(value=5.0, prediction="4.5"))
(True, False)
>>> bad(Outcome(label="down")) is None  # no value: this feedback does not count
True
>>> try:
...     compile_condition("label = 'down'")
... except ExpressionError as exc:
...     print(exc)
position 6: '=' is not an operator; compare with '=='
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, NoReturn, TypeAlias, cast

from model_canary.streams.errors import ConfigError

#: The longest expression accepted (characters) and how deeply it may nest.
MAX_SOURCE: Final = 2000
MAX_DEPTH: Final = 40


class ExpressionError(ConfigError):
    """An expression that cannot be compiled: ``position`` (0-based character offset) and a
    message saying what was expected there.

    >>> try:
    ...     compile_condition("value >")
    ... except ExpressionError as exc:
    ...     print(exc.position, exc)
    7 position 7: expected a value (a number, a text, a name or '('), got the end
    """

    def __init__(self, message: str, position: int, source: str = "") -> None:
        super().__init__(f"position {position}: {message}")
        self.message = message
        self.position = position
        self.source = source

    def pointer(self) -> str:
        """The expression with a caret under the position, for terminals.

        >>> print(ExpressionError("expected a value", 4, "1 +").pointer())
        1 +
            ^ expected a value
        """
        return f"{self.source}\n{' ' * self.position}^ {self.message}"


# --- values -----------------------------------------------------------------------------------


class _Missing:
    """The value of anything computed from a field the feedback does not carry."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
Value: TypeAlias = float | str | bool | _Missing


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a condition reads: one piece of feedback and the prediction it is about.

    ``label`` empty means no label; ``prediction`` is the model's prediction as text (``None``
    when the answer had none).

    >>> Outcome(label="down").label, Outcome().attributes
    ('down', {})
    """

    label: str = ""
    value: float | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    prediction: str | None = None


class Type(Enum):
    """The static type of an expression. ``EITHER`` is ``prediction`` before its use says
    which it is."""

    NUMBER = "a number"
    TEXT = "a text"
    BOOL = "a condition"
    EITHER = "text or a number"


Eval = Callable[[Outcome], Value]


@dataclass(frozen=True, slots=True)
class _Node:
    """A checked sub-expression: its type, its canonical text, how to evaluate it and the
    names it reads."""

    type: Type
    text: str
    run: Eval
    names: frozenset[str]
    #: How to read this node as a number or as text (``prediction`` only).
    as_number: Eval | None = None
    as_text: Eval | None = None
    #: Loosest operator in ``text`` (for parentheses in canonical text): 0 atom, 1 * /,
    #: 2 + -, 3 comparison, 4 not, 5 and, 6 or.
    level: int = 0
    #: Height of the tree (evaluation recurses this deep).
    height: int = 1


# --- tokens -----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>'|")
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\*|/|\(|\)|\[|\]|,|\.)
    """,
    re.VERBOSE,
)
KEYWORDS: Final = frozenset({"and", "or", "not", "in", "true", "false"})
_ESCAPES: Final = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # number, name, string, op, end
    text: str  # the token's source text (a string's decoded value for strings)
    pos: int

    def describe(self) -> str:
        if self.kind == "end":
            return "the end"
        if self.kind == "string":
            return f"the text {self.text!r}"
        return f"{self.text!r}"


def _tokens(source: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            char = source[pos]
            hint = {
                "=": "'=' is not an operator; compare with '=='",
                "!": "'!' is not an operator; use 'not' or '!='",
                "&": "use 'and'",
                "|": "use 'or'",
            }.get(char, f"unexpected character {char!r}")
            raise ExpressionError(hint, pos, source)
        kind = match.lastgroup
        assert kind is not None
        if kind == "string":
            text, end = _string(source, pos)
            out.append(_Token("string", text, pos))
            pos = end
            continue
        if kind != "space":
            out.append(_Token(kind, match.group(), pos))
        pos = match.end()
    out.append(_Token("end", "", len(source)))
    return out


def _string(source: str, start: int) -> tuple[str, int]:
    quote = source[start]
    chars: list[str] = []
    pos = start + 1
    while pos < len(source):
        char = source[pos]
        if char == quote:
            return "".join(chars), pos + 1
        if char == "\\":
            nxt = source[pos + 1 : pos + 2]
            if nxt not in _ESCAPES:
                raise ExpressionError(
                    "unknown escape in a text: use \\\\, \\', \\\", \\n or \\t", pos, source
                )
            chars.append(_ESCAPES[nxt])
            pos += 2
            continue
        chars.append(char)
        pos += 1
    raise ExpressionError(f"text not closed: expected {quote} before the end", start, source)


# --- parsing and checking ---------------------------------------------------------------------


def _num(value: Value) -> float | _Missing:
    """A number, or MISSING for a result that is not finite."""
    if isinstance(value, float) and math.isfinite(value):
        return value
    return MISSING


#: Builds the node of a binary operator: ``(operator, left, right, parser, token)``.
_Binary = Callable[[str, "_Node", "_Node", "_Parser", "_Token"], "_Node"]


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokens(source)
        self.i = 0
        self.depth = 0

    # -- helpers -------------------------------------------------------------------------
    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def fail(self, message: str, at: _Token | None = None) -> NoReturn:
        raise ExpressionError(message, (at or self.tok).pos, self.source)

    def expected(self, what: str) -> NoReturn:
        self.fail(f"expected {what}, got {self.tok.describe()}")

    def take(self, kind: str, text: str | None = None) -> _Token | None:
        tok = self.tok
        if tok.kind == kind and (text is None or tok.text == text):
            self.i += 1
            return tok
        return None

    def need(self, text: str, what: str) -> _Token:
        tok = self.take("op", text)
        if tok is None:
            self.expected(what)
        return tok

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"nested more than {MAX_DEPTH} deep")

    # -- grammar -------------------------------------------------------------------------
    def condition(self) -> _Node:
        node = self.or_()
        if self.tok.kind != "end":
            self.expected("an operator ('and', 'or', a comparison, ...) or the end")
        return node

    def chain(
        self, kind: str, ops: tuple[str, ...], operand: Callable[[], _Node], build: _Binary
    ) -> _Node:
        """Left-associative binary operators ``ops`` (tokens of ``kind``) between operands:
        every level of ``or``, ``and``, ``+ -`` and ``* /`` is parsed by this one loop."""
        node = operand()
        while (tok := self.tok).kind == kind and tok.text in ops:
            self.i += 1
            node = build(tok.text, node, operand(), self, tok)
        return node

    def or_(self) -> _Node:
        return self.chain("name", ("or",), self.and_, _logic)

    def and_(self) -> _Node:
        return self.chain("name", ("and",), self.not_, _logic)

    def not_(self) -> _Node:
        tok = self.tok
        if tok.kind == "name" and tok.text == "not" and not self._not_in():
            self.i += 1
            self.enter()
            operand = self.not_()
            self.depth -= 1
            _want(operand, Type.BOOL, "'not'", self, tok)
            run = operand.run

            def negate(o: Outcome) -> Value:
                v = run(o)
                return v if isinstance(v, _Missing) else not v

            text = f"not {_wrap(operand, 4)}"
            return _make(Type.BOOL, text, negate, [operand], self, tok, level=4)
        return self.comparison()

    def _not_in(self) -> bool:
        # The current token is the name 'not'; an 'end' token always follows the last one.
        nxt = self.tokens[self.i + 1]
        return nxt.kind == "name" and nxt.text == "in"

    def comparison(self) -> _Node:
        left = self.sum()
        tok = self.tok
        if tok.kind == "op" and tok.text in _COMPARE:
            self.i += 1
            node = _compare(tok.text, left, self.sum(), self, tok)
        elif tok.kind == "name" and (tok.text == "in" or (tok.text == "not" and self._not_in())):
            negated = tok.text == "not"
            self.i += 2 if negated else 1
            node = _membership(left, self.literal_list(), negated, self, tok)
        else:
            return left
        after = self.tok
        if (after.kind == "op" and after.text in _COMPARE) or (
            after.kind == "name" and after.text == "in"
        ):
            self.fail("comparisons do not chain: join them with 'and'", after)
        return node

    def sum(self) -> _Node:
        return self.chain("op", ("+", "-"), self.product, _arith)

    def product(self) -> _Node:
        return self.chain("op", ("*", "/"), self.unary, _arith)

    def unary(self) -> _Node:
        tok = self.take("op", "-")
        if tok is None:
            return self.primary()
        self.enter()
        operand = _as(self.unary(), Type.NUMBER, "'-'", self, tok)
        self.depth -= 1
        run = operand.run

        def neg(o: Outcome) -> Value:
            v = run(o)
            return v if isinstance(v, _Missing) else -_f(v)

        return _make(Type.NUMBER, f"-{_wrap(operand, 0)}", neg, [operand], self, tok)

    def primary(self) -> _Node:
        tok = self.tok
        if tok.kind == "number":
            self.i += 1
            return _constant(_number_literal(tok, self), tok.text)
        if tok.kind == "string":
            self.i += 1
            return _constant(tok.text, _quote(tok.text))
        if tok.kind == "op" and tok.text == "(":
            self.i += 1
            self.enter()
            node = self.or_()
            self.depth -= 1
            self.need(")", "')'")
            return node
        if tok.kind == "name":
            self.i += 1
            if tok.text in ("true", "false"):
                return _constant(tok.text == "true", tok.text)
            if tok.text in KEYWORDS:
                self.fail(f"expected a value, got the keyword {tok.text!r}", tok)
            if self.take("op", "(") is not None:
                return self.call(tok)
            return self.name(tok)
        self.expected("a value (a number, a text, a name or '(')")

    def name(self, tok: _Token) -> _Node:
        if tok.text == "attributes":
            if self.take("op", ".") is not None:
                key = self.take("name")
                if key is None:
                    self.expected("an attribute name after 'attributes.'")
                return _attribute(key.text, f"attributes.{key.text}")
            if self.take("op", "[") is not None:
                quoted = self.take("string")
                if quoted is None:
                    self.expected("a quoted attribute name, e.g. attributes['my key']")
                self.need("]", "']'")
                return _attribute(quoted.text, f"attributes[{_quote(quoted.text)}]")
            self.fail("'attributes' needs a name: attributes.NAME or attributes['NAME']", tok)
        variable = _VARIABLES.get(tok.text)
        if variable is None:
            self.fail(f"unknown name {tok.text!r}; known names: {', '.join(NAMES)}", tok)
        return variable

    def call(self, tok: _Token) -> _Node:
        build = _FUNCTIONS.get(tok.text)
        if build is None:
            self.fail(f"unknown function {tok.text!r}; functions: {', '.join(FUNCTIONS)}", tok)
        self.enter()
        args: list[_Node] = []
        if self.take("op", ")") is None:
            while True:
                args.append(self.or_())
                if self.take("op", ")") is not None:
                    break
                self.need(",", "',' or ')'")
        self.depth -= 1
        return build(args, self, tok)

    def literal_list(self) -> list[_Node]:
        self.need("[", "'[' starting a list of values, e.g. in ['down', 'bad']")
        items: list[_Node] = []
        if self.take("op", "]") is not None:
            return items
        while True:
            sign = self.take("op", "-")
            lit = self.take("number") or (None if sign else self.take("string"))
            if lit is None:
                self.expected("a number or a quoted text in the list")
            if lit.kind == "number":
                value = _number_literal(lit, self)
                text = f"-{lit.text}" if sign else lit.text
                items.append(_constant(-value if sign else value, text))
            else:
                items.append(_constant(lit.text, _quote(lit.text)))
            if self.take("op", "]") is not None:
                return items
            self.need(",", "',' or ']'")


# --- node builders ----------------------------------------------------------------------------


def _f(v: Value) -> float:
    """A number value (the type checker guarantees it)."""
    return cast(float, v)


def _s(v: Value) -> str:
    """A text value (the type checker guarantees it)."""
    return cast(str, v)


def _make(
    kind: Type,
    text: str,
    run: Eval,
    children: Sequence[_Node],
    parser: _Parser,
    tok: _Token,
    *,
    level: int = 0,
) -> _Node:
    height = 1 + max((c.height for c in children), default=0)
    if height > MAX_DEPTH:
        parser.fail(
            f"more than {MAX_DEPTH} operations deep: split the metric, or test a list of "
            "values with 'in [...]'",
            tok,
        )
    names = frozenset().union(*(c.names for c in children))
    return _Node(kind, text, run, names, level=level, height=height)


def _constant(value: float | str | bool, text: str) -> _Node:
    if isinstance(value, bool):
        kind = Type.BOOL
    elif isinstance(value, str):
        kind = Type.TEXT
    else:
        kind = Type.NUMBER
    return _Node(kind, text, lambda _o: value, frozenset())


def _number_literal(tok: _Token, parser: _Parser) -> float:
    value = float(tok.text)  # the token pattern only matches what float() reads
    if not math.isfinite(value):
        parser.fail(f"the number {tok.text} is too large", tok)
    return value


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return "'" + escaped.replace("\t", "\\t") + "'"


def _attribute(key: str, text: str) -> _Node:
    def read(o: Outcome) -> Value:
        v = o.attributes.get(key)
        return MISSING if v is None else v

    return _Node(Type.TEXT, text, read, frozenset({f"attributes.{key}"}))


def _label(o: Outcome) -> Value:
    return o.label if o.label else MISSING


def _value(o: Outcome) -> Value:
    return MISSING if o.value is None else _num(float(o.value))


def _prediction_text(o: Outcome) -> Value:
    return MISSING if o.prediction is None else o.prediction


def _prediction_number(o: Outcome) -> Value:
    return _parse_number(o.prediction)


def _parse_number(text: str | None) -> float | _Missing:
    if text is None or len(text) > 100:
        return MISSING
    try:
        return _num(float(text.strip()))
    except ValueError:
        return MISSING


_VARIABLES: Final[Mapping[str, _Node]] = {
    "label": _Node(Type.TEXT, "label", _label, frozenset({"label"})),
    "value": _Node(Type.NUMBER, "value", _value, frozenset({"value"})),
    "score": _Node(Type.NUMBER, "score", _value, frozenset({"value"})),
    "prediction": _Node(
        Type.EITHER,
        "prediction",
        _prediction_text,
        frozenset({"prediction"}),
        as_number=_prediction_number,
        as_text=_prediction_text,
    ),
}


def _as(node: _Node, kind: Type, where: str, parser: _Parser, tok: _Token) -> _Node:
    """``node`` read as ``kind`` (``prediction`` becomes a number or a text), or an error."""
    if node.type is Type.EITHER and kind in (Type.NUMBER, Type.TEXT):
        run = node.as_number if kind is Type.NUMBER else node.as_text
        assert run is not None
        return _Node(kind, node.text, run, node.names, level=node.level, height=node.height)
    _want(node, kind, where, parser, tok)
    return node


def _want(node: _Node, kind: Type, where: str, parser: _Parser, tok: _Token) -> None:
    if node.type is not kind:
        parser.fail(f"{where} needs {kind.value}, but {node.text!r} is {node.type.value}", tok)


def _wrap(node: _Node, level: int) -> str:
    """``node``'s text, in parentheses when it binds more loosely than ``level``."""
    return f"({node.text})" if node.level > level else node.text


def _logic(op: str, left: _Node, right: _Node, parser: _Parser, tok: _Token) -> _Node:
    _want(left, Type.BOOL, f"'{op}'", parser, tok)
    _want(right, Type.BOOL, f"'{op}'", parser, tok)
    a, b = left.run, right.run
    # Kleene's rules: a decisive side decides, whatever the other; else missing is missing.
    decisive = op == "or"

    def run(o: Outcome) -> Value:
        x = a(o)
        if x is decisive:
            return decisive
        y = b(o)
        if y is decisive:
            return decisive
        if isinstance(x, _Missing) or isinstance(y, _Missing):
            return MISSING
        return not decisive

    level = 6 if op == "or" else 5
    text = f"{_wrap(left, level)} {op} {_wrap(right, level - 1)}"
    return _make(Type.BOOL, text, run, [left, right], parser, tok, level=level)


_COMPARE: Final[Mapping[str, Callable[[Value, Value], bool]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": lambda x, y: _f(x) < _f(y),
    "<=": lambda x, y: _f(x) <= _f(y),
    ">": lambda x, y: _f(x) > _f(y),
    ">=": lambda x, y: _f(x) >= _f(y),
}


def _unify(
    left: _Node, right: _Node, where: str, parser: _Parser, tok: _Token
) -> tuple[_Node, _Node]:
    """Both sides of an equality read as one type (``prediction`` takes the other's)."""
    if left.type is Type.EITHER:
        kind = Type.TEXT if right.type is Type.EITHER else right.type
    else:
        kind = left.type
    if kind is Type.BOOL and Type.EITHER in (left.type, right.type):
        parser.fail(f"{where} cannot compare the prediction with a condition", tok)
    left, right = _as(left, kind, where, parser, tok), _as(right, kind, where, parser, tok)
    if left.type is not right.type:  # pragma: no cover - _as already refused it
        parser.fail(f"{where} compares {left.type.value} with {right.type.value}", tok)
    return left, right


def _compare(op: str, left: _Node, right: _Node, parser: _Parser, tok: _Token) -> _Node:
    where = f"'{op}'"
    if op in ("==", "!="):
        if Type.EITHER not in (left.type, right.type) and left.type is not right.type:
            parser.fail(
                f"{where} compares {left.text!r} ({left.type.value}) with "
                f"{right.text!r} ({right.type.value})",
                tok,
            )
        left, right = _unify(left, right, where, parser, tok)
    else:
        left = _as(left, Type.NUMBER, f"{where} (ordering compares numbers)", parser, tok)
        right = _as(right, Type.NUMBER, f"{where} (ordering compares numbers)", parser, tok)
    a, b, test = left.run, right.run, _COMPARE[op]

    def run(o: Outcome) -> Value:
        x = a(o)
        if isinstance(x, _Missing):
            return MISSING
        y = b(o)
        if isinstance(y, _Missing):
            return MISSING
        return test(x, y)

    text = f"{_wrap(left, 2)} {op} {_wrap(right, 2)}"
    return _make(Type.BOOL, text, run, [left, right], parser, tok, level=3)


def _membership(
    left: _Node, items: Sequence[_Node], negated: bool, parser: _Parser, tok: _Token
) -> _Node:
    word = "not in" if negated else "in"
    kinds = {item.type for item in items}
    if len(kinds) > 1:
        parser.fail(f"the list after '{word}' mixes numbers and texts", tok)
    default = Type.TEXT if left.type is Type.EITHER else left.type
    kind = kinds.pop() if kinds else default
    left = _as(left, kind, f"'{word}' with this list", parser, tok)
    values = frozenset(item.run(Outcome()) for item in items)
    a = left.run

    def run(o: Outcome) -> Value:
        x = a(o)
        if isinstance(x, _Missing):
            return MISSING
        return (x in values) != negated

    listed = ", ".join(item.text for item in items)
    text = f"{_wrap(left, 2)} {word} [{listed}]"
    return _make(Type.BOOL, text, run, [left], parser, tok, level=3)


def _arith(op: str, left: _Node, right: _Node, parser: _Parser, tok: _Token) -> _Node:
    where = f"'{op}'"
    left = _as(left, Type.NUMBER, where, parser, tok)
    right = _as(right, Type.NUMBER, where, parser, tok)
    a, b, combine = left.run, right.run, _ARITHMETIC[op]

    def run(o: Outcome) -> Value:
        x = a(o)
        if isinstance(x, _Missing):
            return MISSING
        y = b(o)
        if isinstance(y, _Missing):
            return MISSING
        return combine(_f(x), _f(y))

    level = 1 if op in ("*", "/") else 2
    # Operators associate to the left: a right operand at the same level keeps its
    # parentheses, so the canonical text computes exactly the same thing.
    text = f"{_wrap(left, level)} {op} {_wrap(right, level - 1)}"
    return _make(Type.NUMBER, text, run, [left, right], parser, tok, level=level)


def _divide(x: float, y: float) -> Value:
    return MISSING if y == 0 else _num(x / y)


_ARITHMETIC: Final[Mapping[str, Callable[[float, float], Value]]] = {
    "+": lambda x, y: _num(x + y),
    "-": lambda x, y: _num(x - y),
    "*": lambda x, y: _num(x * y),
    "/": _divide,
}


# --- functions --------------------------------------------------------------------------------

Builder = Callable[[list[_Node], _Parser, _Token], _Node]


def _arity(
    name: str, args: Sequence[_Node], low: int, high: int | None, p: _Parser, t: _Token
) -> None:
    if len(args) < low or (high is not None and len(args) > high):
        if high == low:
            want = f"{low} argument{'s' if low != 1 else ''}"
        elif high is None:
            want = f"at least {low} arguments"
        else:  # pragma: no cover - every function has a fixed or open arity
            want = f"{low} to {high} arguments"
        p.fail(f"{name}() takes {want}, got {len(args)}", t)


def _call_text(name: str, args: Sequence[_Node]) -> str:
    return f"{name}({', '.join(a.text for a in args)})"


def _unary(name: str, arg: Type, result: Type, fn: Callable[[Value], Value]) -> Builder:
    def build(args: list[_Node], p: _Parser, t: _Token) -> _Node:
        _arity(name, args, 1, 1, p, t)
        node = _as(args[0], arg, f"{name}()", p, t)
        run = node.run

        def call(o: Outcome) -> Value:
            v = run(o)
            return v if isinstance(v, _Missing) else fn(v)

        return _make(result, _call_text(name, [node]), call, [node], p, t)

    return build


def _extremum(name: str, pick: Callable[[Sequence[float]], float]) -> Builder:
    def build(args: list[_Node], p: _Parser, t: _Token) -> _Node:
        _arity(name, args, 2, None, p, t)
        nodes = [_as(a, Type.NUMBER, f"{name}()", p, t) for a in args]
        runs = [n.run for n in nodes]

        def call(o: Outcome) -> Value:
            values = [r(o) for r in runs]
            if any(isinstance(v, _Missing) for v in values):
                return MISSING
            return pick([_f(v) for v in values])

        return _make(Type.NUMBER, _call_text(name, nodes), call, nodes, p, t)

    return build


def _text_test(name: str, test: Callable[[str, str], bool]) -> Builder:
    def build(args: list[_Node], p: _Parser, t: _Token) -> _Node:
        _arity(name, args, 2, 2, p, t)
        nodes = [_as(a, Type.TEXT, f"{name}()", p, t) for a in args]
        a, b = nodes[0].run, nodes[1].run

        def call(o: Outcome) -> Value:
            x = a(o)
            if isinstance(x, _Missing):
                return MISSING
            y = b(o)
            if isinstance(y, _Missing):
                return MISSING
            return test(_s(x), _s(y))

        return _make(Type.BOOL, _call_text(name, nodes), call, nodes, p, t)

    return build


def _exists(args: list[_Node], p: _Parser, t: _Token) -> _Node:
    _arity("exists", args, 1, 1, p, t)
    node = args[0]
    if node.type is Type.EITHER:
        node = _as(node, Type.TEXT, "exists()", p, t)
    run = node.run

    def call(o: Outcome) -> Value:
        return not isinstance(run(o), _Missing)

    return _make(Type.BOOL, _call_text("exists", [node]), call, [node], p, t)


def _coalesce(args: list[_Node], p: _Parser, t: _Token) -> _Node:
    _arity("coalesce", args, 2, None, p, t)
    kinds = {a.type for a in args} - {Type.EITHER}
    if len(kinds) > 1:
        described = ", ".join(f"{a.text!r} is {a.type.value}" for a in args)
        p.fail(f"coalesce() needs arguments of one type: {described}", t)
    text = _call_text("coalesce", args)
    if not kinds:  # only predictions: text or a number, as its use says
        as_number = _first([_as(a, Type.NUMBER, "coalesce()", p, t).run for a in args])
        as_text = _first([_as(a, Type.TEXT, "coalesce()", p, t).run for a in args])
        node = _make(Type.TEXT, text, as_text, args, p, t)
        return _Node(Type.EITHER, text, as_text, node.names, as_number, as_text, height=node.height)
    kind = kinds.pop()
    nodes = [_as(a, kind, "coalesce()", p, t) for a in args]
    return _make(kind, _call_text("coalesce", nodes), _first([n.run for n in nodes]), nodes, p, t)


def _first(runs: Sequence[Eval]) -> Eval:
    """The first value of ``runs`` that is not missing."""

    def call(o: Outcome) -> Value:
        for r in runs:
            v = r(o)
            if not isinstance(v, _Missing):
                return v
        return MISSING

    return call


def _round(v: Value) -> Value:
    return float(round(_f(v)))


_FUNCTIONS: Final[Mapping[str, Builder]] = {
    "abs": _unary("abs", Type.NUMBER, Type.NUMBER, lambda v: abs(_f(v))),
    "round": _unary("round", Type.NUMBER, Type.NUMBER, _round),
    "min": _extremum("min", min),
    "max": _extremum("max", max),
    "lower": _unary("lower", Type.TEXT, Type.TEXT, lambda v: _s(v).lower()),
    "upper": _unary("upper", Type.TEXT, Type.TEXT, lambda v: _s(v).upper()),
    "trim": _unary("trim", Type.TEXT, Type.TEXT, lambda v: _s(v).strip()),
    "len": _unary("len", Type.TEXT, Type.NUMBER, lambda v: float(len(_s(v)))),
    "number": _unary("number", Type.TEXT, Type.NUMBER, lambda v: _parse_number(_s(v))),
    "contains": _text_test("contains", lambda x, y: y in x),
    "startswith": _text_test("startswith", lambda x, y: x.startswith(y)),
    "endswith": _text_test("endswith", lambda x, y: x.endswith(y)),
    "exists": _exists,
    "coalesce": _coalesce,
}
FUNCTIONS: Final = tuple(sorted(_FUNCTIONS))
NAMES: Final = (*_VARIABLES, "attributes.NAME")


# --- the compiled condition -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Condition:
    """A compiled condition: call it with an :class:`Outcome` to get ``True`` (bad),
    ``False`` (good) or ``None`` (this feedback does not count: a field it reads is missing).

    ``text`` is the canonical form (spacing and quotes normalised; it compiles to the same
    condition); ``names`` the fields it reads (``label``, ``value``, ``prediction``,
    ``attributes.KEY``).

    >>> c = compile_condition("attributes.complaint=='yes'  or  score<0.7")
    >>> c.text, sorted(c.names)
    ("attributes.complaint == 'yes' or score < 0.7", ['attributes.complaint', 'value'])
    """

    source: str
    text: str
    names: frozenset[str]
    _run: Eval

    def __call__(self, outcome: Outcome) -> bool | None:
        result = self._run(outcome)
        return None if isinstance(result, _Missing) else bool(result)

    @property
    def reads_prediction(self) -> bool:
        """Whether the condition needs the model's prediction (not only the feedback)."""
        return "prediction" in self.names


def compile_condition(source: str) -> Condition:
    """Parse and check ``source``; :class:`ExpressionError` (with the position and what was
    expected) for anything that is not a condition of this language. Never raises anything
    else, whatever the text."""
    if not isinstance(source, str):
        raise ExpressionError(f"a condition is text, got {type(source).__name__}", 0)
    if len(source) > MAX_SOURCE:
        raise ExpressionError(f"longer than {MAX_SOURCE} characters", MAX_SOURCE, source[:80])
    if not source.strip():
        raise ExpressionError("expected a condition, got nothing", 0, source)
    parser = _Parser(source)
    node = parser.condition()
    if node.type is not Type.BOOL:
        what = "text or a number" if node.type is Type.EITHER else node.type.value
        raise ExpressionError(
            f"a condition must be true or false, but {node.text!r} is {what} "
            "(compare it: e.g. label == 'down', value > 5)",
            0,
            source,
        )
    return Condition(source, node.text, node.names, node.run)
