"""One rule for the text fields of every request body (DESIGN §5, issue 11 "empty strings"):

- required text (`NonBlank*`, and each item of a list that must have one, `RequiredItem`:
  participants): stripped, and it must not be empty: "" or only spaces is a 422 that names the
  field ("family.name: Value error, must not be empty");
- optional text: blank ("" or only spaces) means absent — the field's default, "" for a text
  that defaults to "" (`OptionalText`, `OptionalShort`), None for one that may be None
  (`OptionalLabel`, `OptionalLongText`), and a blank item of a list that may be empty
  (`LabelItems`, `ShortItems`: diagnoses, needs, departments) is left out; any other value is
  kept as written.

Where it applies. Required text has always been refused when blank, everywhere. The rest of
the rule (blank optional text made absent, blank participants refused) applies at the edge, to
what a caller sends: the API's outer middleware marks each HTTP request (`at_edge`). Off the
edge — inside the case workflow, replaying a history, loading a stored state, in the domain —
a value passes unchanged: what reaches the workflow was already cleaned at the edge, and a
running case replays exactly what it recorded before this rule (DESIGN §8). Only truthiness of
these fields matters to the domain, so "" and None mean the same there anyway. Types that are
part of the stored case state (`CaseState`) only ever clean, never refuse, so a state stored
before this rule still loads, at the edge too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

LABEL_CHARS = 200  # ids, names, departments, paragraphs, phone numbers, e-mail addresses
SHORT_CHARS = 2_000  # a goal, an action, a location, a need
TEXT_CHARS = 20_000  # notes, minutes, reasons, comments, the child's views

_AT_EDGE: ContextVar[bool] = ContextVar("onefamily_text_at_edge", default=False)


def mark_edge() -> None:
    """This request came from a caller: apply the whole rule (api/hardening.py, per request)."""
    _AT_EDGE.set(True)


@contextmanager
def at_edge() -> Iterator[None]:
    """The whole rule for a block of code (tests, scripts validating what a caller typed)."""
    token = _AT_EDGE.set(True)
    try:
        yield
    finally:
        _AT_EDGE.reset(token)


def _required(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _required_item(value: str) -> str:
    return _required(value) if _AT_EDGE.get() else value


def _blank_is_empty(value: str) -> str:
    return "" if _AT_EDGE.get() and not value.strip() else value


def _drop_blank_items(value: object) -> object:
    if _AT_EDGE.get() and isinstance(value, list):
        return [v for v in value if not (isinstance(v, str) and not v.strip())]
    return value


def _blank_is_none(value: object) -> object:
    if _AT_EDGE.get() and isinstance(value, str) and not value.strip():
        return None
    return value


# The spec says so too (OpenAPI): at least one character that is not a space.
NOT_BLANK = {"minLength": 1, "pattern": r"\S"}
# Required text: never blank (everywhere, as always).
NonBlank = Annotated[str, Field(max_length=TEXT_CHARS, json_schema_extra=NOT_BLANK),
                     AfterValidator(_required)]
NonBlankLabel = Annotated[str, Field(max_length=LABEL_CHARS, json_schema_extra=NOT_BLANK),
                          AfterValidator(_required)]
NonBlankShort = Annotated[str, Field(max_length=SHORT_CHARS, json_schema_extra=NOT_BLANK),
                          AfterValidator(_required)]
# An item of a list that must have one (participants; command bodies only, never stored).
RequiredItem = Annotated[str, Field(max_length=LABEL_CHARS, json_schema_extra=NOT_BLANK),
                         AfterValidator(_required_item)]
# A list of texts that may be empty: blank items are left out (at the edge).
LabelItems = Annotated[list[Annotated[str, Field(max_length=LABEL_CHARS)]],
                       BeforeValidator(_drop_blank_items)]
ShortItems = Annotated[list[Annotated[str, Field(max_length=SHORT_CHARS)]],
                       BeforeValidator(_drop_blank_items)]
# Optional text that defaults to "": blank is "".
OptionalText = Annotated[str, Field(max_length=TEXT_CHARS), AfterValidator(_blank_is_empty)]
OptionalShort = Annotated[str, Field(max_length=SHORT_CHARS), AfterValidator(_blank_is_empty)]
# Optional text that may be None: blank is None.
OptionalLabel = Annotated[Annotated[str, Field(max_length=LABEL_CHARS)] | None,
                          BeforeValidator(_blank_is_none)]
OptionalLongText = Annotated[Annotated[str, Field(max_length=TEXT_CHARS)] | None,
                             BeforeValidator(_blank_is_none)]
