"""What a stats page's body is: Prometheus text, JSON, or why it is neither (in a few words)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tokentop.collectors.fetch import Answer


@dataclass(frozen=True)
class JsonBody:
    data: object


@dataclass(frozen=True)
class BodyProblem:
    reason: str


def decode_body(answer: Answer) -> str | JsonBody | BodyProblem:
    """The page's text, its JSON, or why it is neither."""
    body = answer.body
    if not body or body.isspace():
        return BodyProblem("empty page")
    if body.find(b"\x00") >= 0:  # ``in`` tries the needle as an int first: an exception each page
        return BodyProblem("binary data")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("utf-8", errors="replace")
        if text.count("\ufffd") * 100 > len(text):
            return BodyProblem("binary data")
    first = text.lstrip()[:1]  # the page itself, not a copy, when it starts with no blank
    if first == "<" or "html" in answer.content_type.lower():
        return BodyProblem("not a metrics page (HTML)")
    if first in ("[", "{"):
        try:
            return JsonBody(json.loads(text))
        except ValueError:
            return BodyProblem("not a metrics page (broken JSON)")
        except RecursionError:
            return BodyProblem("not a metrics page (JSON nested too deep)")
    return text
