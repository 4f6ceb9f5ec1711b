"""Zero-shot hypothesis templates: one ``{}`` where the label goes, filled literally.

A template comes from a request. With ``str.format`` it was a small language: ``{:>20000000}``
pads to twenty million characters, ``{0.__class__}`` reads attributes. Here the single ``{}``
is replaced by the label as plain text, any other brace is refused, and the length is capped.
"""

from __future__ import annotations

SLOT = "{}"
MAX_TEMPLATE_CHARS = 500
"""Longest template: a sentence or two around the label."""


def check_template(template: str) -> str:
    """Return ``template`` if it is usable; raise ``ValueError`` saying why not."""
    if len(template) > MAX_TEMPLATE_CHARS:
        raise ValueError(
            f"template is {len(template)} characters long; at most {MAX_TEMPLATE_CHARS}"
        )
    slots = template.count(SLOT)
    if slots != 1:
        raise ValueError(
            f"template must contain '{{}}' exactly once, where the label goes: {template!r}"
        )
    if "{" in template.replace(SLOT, "") or "}" in template.replace(SLOT, ""):
        raise ValueError(
            f"template may hold no brace but the one '{{}}' where the label goes: {template!r}"
        )
    return template


def fill(template: str, label: str) -> str:
    """The hypothesis for ``label``: ``template`` with its ``{}`` replaced by the label as is."""
    check_template(template)
    return template.replace(SLOT, label, 1)
