"""A document far longer than one window is found by what only its middle or end says."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import ok_json, write_jsonl
from tests.integration.test_cli import TOPICS

FILLER = [
    "The committee met again on Tuesday to review the municipal budget line by line.",
    "Several members asked for clearer figures on road maintenance and street lighting.",
    "The treasurer explained how property tax receipts had changed over the decade.",
    "A long discussion followed about the pension obligations of retired employees.",
    "Residents wrote letters about parking fees near the central market square.",
    "The auditor recommended separating capital spending from operating costs.",
]
MIDDLE = (
    "Deep in the report, an appendix described how coral reefs bleach when ocean water "
    "warms, as symbiotic algae leave the coral polyps and the reef turns white."
)
END = (
    "The final section turned to astronomy: the city observatory will track Jupiter's moons "
    "and photograph the Great Red Spot with its new telescope."
)


def long_document() -> str:
    body = [FILLER[i % len(FILLER)] for i in range(120)]
    return " ".join([*body[:60], MIDDLE, *body[60:], END])


def test_long_document_found_by_its_middle_and_its_end(env: dict[str, str], tmp_path: Path) -> None:
    text = long_document()
    docs = [{"id": "report", "title": "Council minutes", "text": text}]
    docs += [{"id": k, "text": v} for k, v in TOPICS.items()]
    docs += [{"id": f"f{i}", "text": s} for i, s in enumerate(FILLER)]
    job = ok_json(
        env, "index", str(write_jsonl(tmp_path / "c.jsonl", docs)), "-c", "long", "--json", "-q"
    )
    assert job["status"] == "succeeded"
    full = "Council minutes " + text

    for query, needle in [
        ("why do coral reefs bleach when the sea gets warmer", MIDDLE),
        ("telescope photographs of Jupiter's moons and the Great Red Spot", END),
    ]:
        hit = ok_json(env, "search", "long", query, "--json", "-k", "3")["hits"][0]
        assert hit["id"] == "report"
        start, end = hit["chunk"]["start"], hit["chunk"]["end"]
        assert start > 0 and hit["chunk"]["window"] > 0
        at = full.find(needle)
        assert at < end and at + len(needle) > start  # the winning window covers the needle
        assert end - start < len(full)
    # The beginning alone does not carry those topics: it is several windows away.
    assert full.find(MIDDLE) > 2000
