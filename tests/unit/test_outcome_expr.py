"""The outcome-metric expression language: semantics, errors with positions, and properties
(never raises anything but its own error on any text; bounded nesting; canonical text)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.streams.errors import CanaryError, ConfigError
from model_canary.streams.outcomes.expr import (
    FUNCTIONS,
    MAX_DEPTH,
    MAX_SOURCE,
    ExpressionError,
    Outcome,
    compile_condition,
)


def bad(text: str, **fields: object) -> bool | None:
    return compile_condition(text)(Outcome(**fields))  # type: ignore[arg-type]


# --- semantics --------------------------------------------------------------------------------


def test_the_issue_examples() -> None:
    assert bad("label == 'down'", label="down") is True
    assert bad("label == 'down'", label="up") is False
    assert bad("abs(value - prediction) > 5", value=10.0, prediction="4") is True
    assert bad("abs(value - prediction) > 5", value=8.0, prediction="4") is False
    assert bad("score < 0.7", value=0.5) is True
    assert bad("score < 0.7", value=0.9) is False
    assert bad("attributes.complaint == 'yes'", attributes={"complaint": "yes"}) is True


def test_missing_fields_mean_the_feedback_does_not_count() -> None:
    assert bad("label == 'down'", value=3.0) is None  # no label
    assert bad("score < 0.7", label="down") is None  # no value
    assert bad("abs(value - prediction) > 5", value=1.0, prediction="cat") is None
    assert bad("abs(value - prediction) > 5", value=1.0) is None  # no prediction
    assert bad("attributes.complaint == 'yes'", label="x") is None


def test_kleene_logic_and_defaults() -> None:
    assert bad("label == 'down' or attributes.complaint == 'yes'", label="down") is True
    assert bad("label == 'down' or attributes.complaint == 'yes'", label="up") is None
    assert bad("label == 'down' and score < 0.5", label="up") is False
    assert bad("label == 'down' and score < 0.5", label="down") is None
    assert bad("not exists(label)", value=1.0) is True
    assert bad("coalesce(attributes.complaint, 'no') == 'yes'", label="up") is False
    assert bad("coalesce(score, 1) < 0.5", label="up") is False


def test_prediction_reads_as_text_or_number_by_use() -> None:
    assert bad("prediction == label", label="setosa", prediction="setosa") is True
    assert bad("prediction != label", label="setosa", prediction="virginica") is True
    assert bad("prediction == 3", prediction="3.0") is True  # a number: 3.0 == 3
    assert bad("prediction == '3'", prediction="3.0") is False  # text: '3.0' != '3'
    assert bad("prediction > 2", prediction=" 2.5 ") is True
    assert bad("prediction in ['a', 'b']", prediction="b") is True
    assert bad("prediction in [1, 2]", prediction="2") is True
    assert bad("len(prediction) > 3", prediction="abcd") is True
    assert bad("prediction > 1", prediction="nan") is None
    assert bad("prediction > 1", prediction="1e999") is None


def test_functions() -> None:
    assert bad("lower(trim(label)) == 'down'", label="  DOWN ") is True
    assert bad("upper(label) == 'DOWN'", label="down") is True
    assert bad("min(value, 10) == 3 and max(value, 1, 2) == 3", value=3.0) is True
    assert bad("round(value) == 3", value=2.6) is True
    assert bad("number(attributes.stars) <= 2", attributes={"stars": "2"}) is True
    assert bad("number(attributes.stars) <= 2", attributes={"stars": "two"}) is None
    assert bad("contains(lower(attributes.text), 'refund')", attributes={"text": "A REFUND"})
    assert bad("startswith(label, 'do') and endswith(label, 'wn')", label="down") is True
    assert bad("attributes['my key'] == 'x'", attributes={"my key": "x"}) is True
    assert bad("label not in ['up', 'neutral']", label="down") is True
    assert bad("value in [-1, 0.5]", value=-1.0) is True
    assert bad("value in []", value=1.0) is False
    assert set(FUNCTIONS) >= {"abs", "min", "max", "lower", "exists", "coalesce"}


def test_arithmetic_that_cannot_be_represented_is_missing() -> None:
    assert bad("value / 0 > 1", value=1.0) is None
    assert bad("value * 1e300 > 1", value=1e300) is None
    assert bad("-value < 0", value=2.0) is True
    assert bad("value - 1 - 1 == 0", value=2.0) is True  # left to right
    assert bad("value / 2 / 2 == 1", value=4.0) is True


def test_precedence() -> None:
    assert bad("1 + 2 * 3 == 7", label="x") is True
    assert bad("not label == 'a' and true", label="b") is True
    assert bad("true or false and false", label="x") is True


def test_canonical_text() -> None:
    c = compile_condition("abs( value-prediction )>5")
    assert c.text == "abs(value - prediction) > 5"
    assert sorted(c.names) == ["prediction", "value"] and c.reads_prediction
    assert compile_condition("value - (1 - 2) == 0").text == "value - (1 - 2) == 0"
    assert compile_condition("(value - 1) - 2 == 0").text == "value - 1 - 2 == 0"
    assert compile_condition("not (true and false)").text == "not (true and false)"
    assert compile_condition('label == "it\'s"').text == "label == 'it\\'s'"
    assert not compile_condition("score < 0.7").reads_prediction


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("label = 'down'", 6, "'=' is not an operator; compare with '=='"),
        ("value >", 7, "expected a value"),
        ("lable == 'down'", 0, "unknown name 'lable'; known names: label, value"),
        ("label == 5", 6, "compares 'label' (a text) with '5' (a number)"),
        ("label < 'b'", 6, "ordering compares numbers"),
        ("value + 1", 0, "must be true or false"),
        ("abs(value, 2) > 1", 0, "abs() takes 1 argument, got 2"),
        ("sqrt(value) > 1", 0, "unknown function 'sqrt'"),
        ("0 < value < 5", 10, "comparisons do not chain"),
        ("label == 'down", 9, "text not closed"),
        ("label == 'a\\x'", 11, "unknown escape"),
        ("(label == 'a'", 13, "expected ')'"),
        ("label == 'a' label", 13, "expected an operator"),
        ("attributes == 'x'", 0, "'attributes' needs a name"),
        ("attributes.", 11, "expected an attribute name"),
        ("value in ['a', 1]", 6, "mixes numbers and texts"),
        ("label in 'a'", 9, "expected '['"),
        ("value > 1e999", 8, "too large"),
        ("value & 1", 6, "use 'and'"),
        ("label == 'a' && true", 13, "use 'and'"),
        ("not value", 0, "'not' needs a condition"),
        ("", 0, "expected a condition, got nothing"),
        ("label == and", 9, "got the keyword 'and'"),
        ("coalesce(label, 1) == 'a'", 0, "coalesce() needs arguments of one type"),
        ("prediction == (value > 1)", 11, "cannot compare the prediction with a condition"),
    ],
)
def test_errors_say_where_and_what_was_expected(text: str, position: int, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_condition(text)
    assert caught.value.position == position, str(caught.value)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"position {position}: ")
    assert isinstance(caught.value, ConfigError)
    assert caught.value.pointer().splitlines()[1].index("^") == position


def test_size_and_nesting_are_bounded() -> None:
    with pytest.raises(ExpressionError, match="longer than"):
        compile_condition("true or " * 400 + "true")
    with pytest.raises(ExpressionError, match="nested more than"):
        compile_condition("(" * 100 + "true" + ")" * 100)
    with pytest.raises(ExpressionError, match="nested more than"):
        compile_condition("not " * 100 + "true")
    with pytest.raises(ExpressionError, match="nested more than"):
        compile_condition("-" * 100 + "1 > 0")
    with pytest.raises(ExpressionError, match="operations deep"):
        compile_condition(" + ".join(["value"] * 100) + " > 0")
    deep = " + ".join(["value"] * (MAX_DEPTH - 2)) + " > 0"
    assert len(deep) < MAX_SOURCE and bad(deep, value=1.0) is True


# --- properties -------------------------------------------------------------------------------

VOCABULARY = [
    "label", "value", "score", "prediction", "attributes", ".", "x", "[", "]", "'a'", '"b"',
    "(", ")", ",", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "and", "or", "not",
    "in", "true", "false", "0", "1.5", "1e3", "abs", "min", "max", "lower", "len", "number",
    "exists", "coalesce", "contains", "=", "!", "'", "\\", "1e999",
]  # fmt: skip


@settings(max_examples=300)
@given(st.text(max_size=60) | st.lists(st.sampled_from(VOCABULARY), max_size=25).map(" ".join))
def test_any_text_compiles_or_raises_only_its_own_error(text: str) -> None:
    try:
        compile_condition(text)
    except ExpressionError as exc:
        assert isinstance(exc, CanaryError)
        assert 0 <= exc.position <= len(text)


NUM_LEAVES = st.sampled_from(["value", "score", "prediction", "0", "1.5", "2e2", "len(label)"])
TEXT_LEAVES = st.sampled_from(["label", "attributes.a", "attributes['b c']", "'x'", "prediction"])


def _numbers(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    ops = st.sampled_from("+-*/")
    return st.one_of(
        st.tuples(children, ops, children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        children.map(lambda c: f"abs({c})"),
        children.map(lambda c: f"-{c}"),
        st.tuples(children, children).map(lambda t: f"min({t[0]}, {t[1]})"),
        st.tuples(children, children).map(lambda t: f"coalesce({t[0]}, {t[1]})"),
    )  # fmt: skip


NUMBERS = st.recursive(NUM_LEAVES, _numbers, max_leaves=6)


def _texts(c: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pairs = st.tuples(c, c).map(lambda t: f"coalesce({t[0]}, {t[1]})")
    return c.map(lambda x: f"lower({x})") | pairs


TEXTS = st.recursive(TEXT_LEAVES, _texts, max_leaves=3)
ATOMS = st.one_of(
    st.tuples(NUMBERS, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), NUMBERS).map(" ".join),
    st.tuples(TEXTS, st.sampled_from(["==", "!="]), TEXTS).map(" ".join),
    TEXTS.map(lambda t: f"{t} in ['x', 'down']"),
    TEXTS.map(lambda t: f"exists({t})"),
    st.tuples(TEXTS, TEXTS).map(lambda t: f"contains({t[0]}, {t[1]})"),
    st.sampled_from(["true", "false"]),
)
CONDITIONS = st.recursive(
    ATOMS,
    lambda c: st.one_of(
        c.map(lambda x: f"not ({x})"),
        st.tuples(c, st.sampled_from(["and", "or"]), c).map(lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
    ),
    max_leaves=4,
)  # fmt: skip
ODD_TEXT = st.sampled_from(["", "x", "down", "1", " 2.5 ", "nan", "inf", "1e999", "-0", "é\x00"])
OUTCOMES = st.builds(
    Outcome,
    label=ODD_TEXT,
    value=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    attributes=st.dictionaries(st.sampled_from(["a", "b c", "z"]), ODD_TEXT, max_size=3),
    prediction=st.none() | ODD_TEXT,
)


@settings(max_examples=300)
@given(CONDITIONS, OUTCOMES)
def test_generated_conditions_compile_evaluate_and_keep_their_canonical_text(
    text: str, outcome: Outcome
) -> None:
    try:
        cond = compile_condition(text)
    except ExpressionError as exc:  # only the depth bound may refuse a generated condition
        assert "deep" in str(exc)
        return
    again = compile_condition(cond.text)
    assert again.text == cond.text and again.names == cond.names
    result = cond(outcome)
    assert result in (True, False, None)
    assert again(outcome) is result
    if result is not None and math.isfinite(outcome.value or 0.0):
        assert isinstance(result, bool)


def test_coalesce_of_predictions_reads_as_its_use_says() -> None:
    assert bad("abs(coalesce(prediction, prediction)) > 1", prediction="-3") is True
    assert bad("coalesce(prediction, prediction) == 'a'", prediction="a") is True
    assert bad("coalesce(prediction, 2) > 1", prediction="x") is True
