"""Kubernetes label selectors (`metav1.LabelSelector`): the model, the match, kubectl's syntax.

A selector is `matchLabels` (a map: the label present with that value) and `matchExpressions`
(`{key, operator, values}`, operator `In`, `NotIn`, `Exists` or `DoesNotExist`), every one of
them required (AND). As Kubernetes decides (apimachinery `labels.Selector`):

- `In`: the label is present and its value is one of `values`; `NotIn`: the label is absent or
  its value is none of them (an absent label satisfies `NotIn`);
- `Exists` / `DoesNotExist`: the label is present / absent, whatever its value;
- `In`/`NotIn` need at least one value, `Exists`/`DoesNotExist` none (refused otherwise);
- the empty selector `{}` matches everything (an absent selector is the caller's business).

Keys are qualified names (`[prefix/]name`: prefix a DNS subdomain up to 253 characters, name up
to 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends), values up to 63 such characters or empty.

`parse_selector` reads kubectl's `-l` syntax (`env=prod,tier in (a,b),!legacy`: `=`, `==`,
`!=`, `in`, `notin`, `key`, `!key`) into a LabelSelector; `format_selector` writes one back.
Pure: no I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from shared.api.v1alpha2 import _Wire

__all__ = [
    "LabelSelector",
    "LabelSelectorRequirement",
    "Operator",
    "check_key",
    "check_value",
    "format_selector",
    "matches",
    "parse_selector",
]

_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class Operator(enum.StrEnum):
    """A matchExpression's operator (Kubernetes spells them so, case and all)."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


_WITH_VALUES = frozenset({Operator.IN, Operator.NOT_IN})


def check_key(key: str) -> str:
    """`key` if it is a qualified name, else ValueError saying why."""
    prefix, slash, name = key.rpartition("/")
    if slash and not (0 < len(prefix) <= 253 and _SUBDOMAIN.match(prefix)):
        raise ValueError(
            f"label key {key!r}: the prefix must be a lowercase DNS subdomain of at most 253 "
            "characters"
        )
    if not _NAME.match(name):
        raise ValueError(
            f"label key {key!r}: the name must be 1 to 63 characters of [A-Za-z0-9._-], "
            "beginning and ending with a letter or digit"
        )
    return key


def check_value(value: str) -> str:
    """`value` if it is a label value (empty, or a name as in a key), else ValueError."""
    if value and not _NAME.match(value):
        raise ValueError(
            f"label value {value!r}: at most 63 characters of [A-Za-z0-9._-], beginning and "
            "ending with a letter or digit"
        )
    return value


class LabelSelectorRequirement(_Wire):
    """One matchExpression."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return check_key(value)

    @field_validator("values")
    @classmethod
    def _values(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for one in value:
            check_value(one)
        return value

    @model_validator(mode="after")
    def _arity(self) -> LabelSelectorRequirement:
        if self.operator in _WITH_VALUES and not self.values:
            raise ValueError(f"{self.key}: operator {self.operator} needs at least one value")
        if self.operator not in _WITH_VALUES and self.values:
            raise ValueError(f"{self.key}: operator {self.operator} takes no values")
        return self

    @model_serializer(mode="wrap")
    def _without_empty(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if not self.values:
            out.pop("values", None)  # as Kubernetes writes Exists and DoesNotExist
        return out

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator is Operator.IN:
            return present and labels[self.key] in self.values
        if self.operator is Operator.NOT_IN:
            return not present or labels[self.key] not in self.values
        if self.operator is Operator.EXISTS:
            return present
        return not present


class LabelSelector(_Wire):
    """metav1.LabelSelector: every matchLabels pair and every matchExpression must hold."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    @field_validator("match_labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, one in value.items():
            check_key(key)
            check_value(one)
        return value

    @model_serializer(mode="wrap")
    def _without_empty(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        return {k: v for k, v in out.items() if v}  # `{}` for the empty selector

    @property
    def empty(self) -> bool:
        """The empty selector, which matches everything."""
        return not self.match_labels and not self.match_expressions


def matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether an object with `labels` is selected by `selector` (Kubernetes' rules above)."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    return all(requirement.matches(labels) for requirement in selector.match_expressions)


# -- kubectl's syntax -------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(!=|==|=|!|\(|\)|,|<|>|[^\s!=(),<>]+)")


def _lexemes(text: str) -> list[tuple[int, str]]:
    """(position, lexeme) of `text` (every character but white space is in some lexeme)."""
    return [(m.start(1), m.group(1)) for m in _TOKEN.finditer(text)]


class _Reader:
    """A cursor over the lexemes, with errors that say where and what was expected."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lexemes = _lexemes(text)
        self.at = 0

    def peek(self) -> str | None:
        return self.lexemes[self.at][1] if self.at < len(self.lexemes) else None

    def take(self) -> str | None:
        lexeme = self.peek()
        self.at += lexeme is not None
        return lexeme

    def fail(self, expected: str) -> ValueError:
        if self.at >= len(self.lexemes):
            where = "at the end"
        else:
            position, lexeme = self.lexemes[self.at]
            where = f"at {lexeme!r} (character {position + 1})"
        return ValueError(f"selector {self.text!r}: expected {expected} {where}")

    def word(self, what: str) -> str:
        lexeme = self.peek()
        if lexeme is None or not _is_word(lexeme):
            raise self.fail(what)
        self.at += 1
        return lexeme


def _is_word(lexeme: str) -> bool:
    return lexeme not in {"!=", "==", "=", "!", "(", ")", ",", "<", ">"}


def parse_selector(text: str) -> LabelSelector:
    """kubectl's `-l` syntax as a LabelSelector: `a=b` and `a==b` in matchLabels (a second
    value for the same key as an `In` expression, so both must hold), `a!=b` as `NotIn [b]`,
    `a in (x,y)`, `a notin (x,y)`, `a` (Exists), `!a` (DoesNotExist); comma-separated, every
    one required. The empty text is the empty selector (everything). ValueError saying where
    the text is wrong, or which key or value is not a valid label key or value."""
    reader = _Reader(text)
    labels: dict[str, str] = {}
    expressions: list[LabelSelectorRequirement] = []
    while reader.peek() is not None:
        key, operator, values = _requirement(reader)
        try:
            for value in values:
                check_value(value)
        except ValueError as exc:
            raise ValueError(f"selector {text!r}: {exc}") from None
        if operator is None and key not in labels:
            labels[key] = values[0]
        else:
            expressions.append(
                LabelSelectorRequirement(key=key, operator=operator or Operator.IN, values=values)
            )
        if reader.peek() is None:
            break
        if reader.peek() != ",":
            raise reader.fail("',' between requirements")
        reader.take()
        if reader.peek() is None:
            raise reader.fail("a requirement after ','")
    return LabelSelector(match_labels=labels, match_expressions=tuple(expressions))


def _requirement(reader: _Reader) -> tuple[str, Operator | None, tuple[str, ...]]:
    """One requirement: (key, its operator or None for equality, values)."""
    if reader.peek() == "!":
        reader.take()
        return _key(reader), Operator.DOES_NOT_EXIST, ()
    key = _key(reader)
    lexeme = reader.peek()
    if lexeme is None or lexeme == ",":
        return key, Operator.EXISTS, ()
    if lexeme in ("=", "==", "!="):
        reader.take()
        following = reader.peek()
        value = reader.take() or "" if following is not None and _is_word(following) else ""
        return key, None if lexeme != "!=" else Operator.NOT_IN, (value,)
    if lexeme in ("in", "notin"):
        reader.take()
        return key, Operator.IN if lexeme == "in" else Operator.NOT_IN, _set(reader)
    if lexeme in ("<", ">"):
        raise reader.fail("=, ==, !=, in or notin (a label selector has no < or >)")
    raise reader.fail("=, ==, !=, in, notin, ',' or the end after a key")


def _key(reader: _Reader) -> str:
    key = reader.word("a label key")
    try:
        return check_key(key)
    except ValueError as exc:
        raise ValueError(f"selector {reader.text!r}: {exc}") from None


def _set(reader: _Reader) -> tuple[str, ...]:
    """`(v1, v2, ...)`: at least one value (a value may be empty: `(a,)`, as kubectl)."""
    if reader.peek() != "(":
        raise reader.fail("'(' opening the set of values")
    reader.take()
    values: list[str] = []
    expecting_value = True
    while (lexeme := reader.peek()) != ")":
        if lexeme is None:
            raise reader.fail("')' closing the set of values")
        if lexeme == ",":
            if expecting_value:
                values.append("")
            expecting_value = True
        elif expecting_value and _is_word(lexeme):
            values.append(lexeme)
            expecting_value = False
        else:
            raise reader.fail("',' or ')' in the set of values")
        reader.take()
    reader.take()
    if expecting_value and values:
        values.append("")
    if not values:
        raise ValueError(f"selector {reader.text!r}: in and notin need at least one value")
    return tuple(dict.fromkeys(values))


def format_selector(selector: LabelSelector) -> str:
    """The selector in kubectl's syntax (what `parse_selector` reads back to the same one)."""
    parts = [f"{key}={value}" for key, value in selector.match_labels.items()]
    for requirement in selector.match_expressions:
        key, values = requirement.key, ",".join(requirement.values)
        parts.append(
            {
                Operator.IN: f"{key} in ({values})",
                Operator.NOT_IN: f"{key} notin ({values})",
                Operator.EXISTS: key,
                Operator.DOES_NOT_EXIST: f"!{key}",
            }[requirement.operator]
        )
    return ",".join(parts)
