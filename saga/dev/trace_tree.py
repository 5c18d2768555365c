"""One trace as an indented text tree, one span per line (:func:`render_tree`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from saga.dev.otlp_decode import AttributeValue, CollectedSpan


def render_tree(
    spans: Sequence[CollectedSpan],
    *,
    attributes: Sequence[str] = ("saga.step", "saga.outcome", "saga.status"),
) -> str:
    """Render one trace as an indented text tree, one span per line.

    Roots are the spans whose parent is not among ``spans``; children follow
    their parent, sorted by start time, drawn with ``├ ``/``└ `` connectors and
    ``│ `` guides (two columns per level, so deep saga traces stay readable). Each line reads
    ``name  [service]  12.3 ms  key=value ...`` showing only the listed
    ``attributes`` the span has.
    """
    ids = {span.span_id for span in spans}
    children: dict[str, list[CollectedSpan]] = {}
    roots: list[CollectedSpan] = []
    for span in spans:
        if span.parent_span_id is not None and span.parent_span_id in ids:
            children.setdefault(span.parent_span_id, []).append(span)
        else:
            roots.append(span)
    lines: list[str] = []
    seen: set[str] = set()

    def by_start(items: list[CollectedSpan]) -> list[CollectedSpan]:
        return sorted(items, key=lambda s: (s.start_ns, s.end_ns))

    def visit(span: CollectedSpan, prefix: str, connector: str, below: str) -> None:
        if span.span_id in seen:  # duplicate ids or a cycle: print once
            return
        seen.add(span.span_id)
        lines.append(prefix + connector + _describe(span, attributes))
        kids = by_start(children.get(span.span_id, []))
        for index, kid in enumerate(kids):
            last = index == len(kids) - 1
            visit(kid, prefix + below, "└ " if last else "├ ", "  " if last else "│ ")

    for root in by_start(roots):
        visit(root, "", "", "")
    return "\n".join(lines)


def _describe(span: CollectedSpan, keys: Sequence[str]) -> str:
    text = f"{span.name}  [{span.service}]  {span.duration_ms:.1f} ms"
    shown = _format_attributes(span.attributes, keys)
    return f"{text}  {shown}" if shown else text


def _format_attributes(values: Mapping[str, AttributeValue], keys: Sequence[str]) -> str:
    return " ".join(f"{key}={values[key]}" for key in keys if key in values)
