"""Search as a user sees it: modes, metadata filters, hits with their text, documents,
batch search, re-indexing from stored vectors and re-ranking; through the CLI and a real
``embedq api`` server on the same embedded data folder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ROOT, clean_env, embedq, ok_json, write_jsonl
from tests.services import embedq_process, free_port, wait_http

TOPICS = ("gardening", "railways", "astronomy")
PLANTED = {
    "id": "planted",
    "title": "Ledger of a harbour office",
    "text": "Entries for cargo weights, tariffs paid and the names of the ships' masters.",
    "meta": {"source": "archive-7", "year": 1850, "topic": "archives"},
}
UNRELATED = "How do bees find flowers to pollinate?"


def demo_subset() -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in (ROOT / "demo" / "corpus.jsonl").open()]
    return [d for d in docs if d["meta"]["topic"] in TOPICS] + [PLANTED]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("search")
    corpus = write_jsonl(folder / "corpus.jsonl", demo_subset())
    env = clean_env(EMBEDQ_DATA_DIR=str(folder / "data"))
    job = ok_json(env, "index", str(corpus), "-c", "demo", "-q", "--json")
    assert job["status"] == "succeeded", job
    return folder / "data"


@pytest.fixture(scope="module")
def env(data_dir: Path) -> dict[str, str]:
    return clean_env(EMBEDQ_DATA_DIR=str(data_dir))


@pytest.fixture(scope="module")
def client(data_dir: Path, env: dict[str, str]) -> Iterator[httpx.Client]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = embedq_process(
        ["api", "--host", "127.0.0.1", "--port", str(port)], env, data_dir.parent / "api.log"
    )
    try:
        wait_http(f"{url}/healthz")
        with httpx.Client(base_url=url, timeout=120) as http:
            yield http
    finally:
        proc.stop()


def search(env: dict[str, str], query: str, *args: str) -> list[dict[str, Any]]:
    hits: list[dict[str, Any]] = ok_json(env, "search", "demo", query, "--json", *args)["hits"]
    return hits


# --- modes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_each_mode_finds_the_document_on_topic(env: dict[str, str], mode: str) -> None:
    hits = search(env, "Trans-Siberian Railway from Moscow to Vladivostok", "--mode", mode)
    assert hits[0]["id"] == "rail-002", hits
    assert hits == sorted(hits, key=lambda h: -h["score"])


def test_sparse_matches_words_and_dense_matches_meaning(env: dict[str, str]) -> None:
    # No word in common with the planted ledger: BM25 cannot find it, vectors still rank it.
    sparse = search(env, "bookkeeping of a port", "--mode", "sparse", "-k", "50")
    assert "planted" not in [h["id"] for h in sparse]
    dense = search(env, "bookkeeping of a port", "--mode", "dense", "-k", "5")
    assert "planted" in [h["id"] for h in dense]


# --- filters -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_a_filter_matching_one_document_returns_it_for_an_unrelated_query(
    env: dict[str, str], mode: str
) -> None:
    hits = search(env, UNRELATED, "--mode", mode, "-k", "1", "--filter", '{"source": "archive-7"}')
    assert [h["id"] for h in hits] == ["planted"]
    assert hits[0]["meta"] == PLANTED["meta"]


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_a_topic_filter_returns_k_hits_all_of_that_topic(env: dict[str, str], mode: str) -> None:
    flt = json.dumps({"topic": "railways"})
    hits = search(env, UNRELATED, "--mode", mode, "-k", "5", "--filter", flt)
    if mode == "sparse":  # only documents sharing a word with the query
        assert hits and all(h["meta"]["topic"] == "railways" for h in hits)
        return
    assert len(hits) == 5
    assert all(h["meta"]["topic"] == "railways" for h in hits)


def test_range_and_in_filters(env: dict[str, str]) -> None:
    flt = json.dumps({"words": {"gte": 200}, "topic": {"in": ["astronomy", "gardening"]}})
    hits = search(env, "stars and plants", "-k", "50", "--filter", flt)
    assert hits
    assert all(h["meta"]["words"] >= 200 for h in hits)
    assert {h["meta"]["topic"] for h in hits} <= {"astronomy", "gardening"}


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_a_filter_finds_the_same_hits_whether_its_windows_are_listed_or_not(
    data_dir: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A selective filter's windows are listed in one pass and searched by id (exact dense
    scores, BM25 restricted to their documents); a broad one is applied to each candidate.
    Both give the same hits."""
    from embedq.tasks import search as searching
    from embedq.tasks.runtime import Runtime
    from embedq.tasks.settings import Settings

    rt = Runtime(Settings(data_dir=data_dir))
    queries = [UNRELATED, "trains and stations", "the orbit of a planet"]
    filters = [{"topic": "railways"}, {"topic": {"in": ["astronomy", "archives"]}}]

    def run() -> list[list[list[str]]]:
        return [
            [
                [h.id for h in hits]
                for hits in searching.search(
                    rt, "demo", queries, 5, searching.SearchOptions(mode=mode, filter=f)
                )
            ]
            for f in filters
        ]

    listed = run()
    monkeypatch.setattr(searching, "EXACT_CHUNKS", 0)
    monkeypatch.setattr(searching, "SPARSE_SELECT", 0)
    assert run() == listed
    assert all(len(hits) == 5 for per_filter in listed for hits in per_filter) or mode == "sparse"
    assert listed[0] != listed[1]


def test_a_bad_filter_is_a_clear_error(env: dict[str, str]) -> None:
    proc = embedq(env, "search", "demo", "x", "--filter", '{"year": {"between": [1, 2]}}')
    assert proc.returncode == 2
    assert "filter key 'year': unknown operator 'between'" in proc.stderr
    proc = embedq(env, "search", "demo", "x", "--filter", "{year")
    assert proc.returncode == 2 and "--filter is not JSON" in proc.stderr


# --- hits, documents, batches over HTTP -----------------------------------------------------


def test_http_hits_carry_title_meta_and_the_window_text(client: httpx.Client) -> None:
    response = client.post(
        "/v1/collections/demo/search", json={"query": "planets orbiting the Sun", "k": 5}
    )
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert len(hits) == 5
    for hit in hits:
        doc = client.get(f"/v1/collections/demo/documents/{hit['id']}").json()
        embedded = f"{doc['title']} {doc['text']}" if doc["title"] else doc["text"]
        chunk = hit["chunk"]
        assert hit["title"] == doc["title"] and hit["meta"] == doc["meta"]
        assert chunk["text"] == embedded[chunk["start"] : chunk["end"]] and chunk["text"]
    bare = client.post(
        "/v1/collections/demo/search", json={"query": "planets", "k": 1, "meta": False}
    ).json()["hits"][0]
    assert "meta" not in bare or bare["meta"] is None


def test_http_document_view_and_not_found(client: httpx.Client) -> None:
    doc = client.get("/v1/collections/demo/documents/planted").json()
    assert doc == {**PLANTED, "chunks": 1, "indexed": True}
    missing = client.get("/v1/collections/demo/documents/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert client.get("/v1/collections/ghost/documents/planted").status_code == 404


def test_http_batch_search_answers_each_query_in_order(client: httpx.Client) -> None:
    queries = ["Trans-Siberian Railway", "harbour office ledger tariffs"]
    body = {"queries": queries, "k": 3, "mode": "hybrid", "filter": {"year": {"lte": 1900}}}
    response = client.post("/v1/collections/demo/search", json=body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2
    assert [h["id"] for h in results[1]["hits"]] == ["planted"]
    assert [h["id"] for h in results[0]["hits"]] == ["planted"]  # the only one that passes
    single = client.post(
        "/v1/collections/demo/search", json={"query": queries[0], "k": 3, "mode": "sparse"}
    ).json()["hits"]
    batch = client.post(
        "/v1/collections/demo/search", json={"queries": queries[:1], "k": 3, "mode": "sparse"}
    ).json()["results"][0]["hits"]
    assert batch == single


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"query": "x", "filter": {"a": {"like": 1}}}, "unknown operator 'like'"),
        ({"query": "x", "queries": ["y"]}, "either query or queries"),
        ({"queries": []}, "queries"),
        ({"query": "x", "mode": "fuzzy"}, "mode"),
        ({"query": "x", "alpha": 2}, "alpha"),
    ],
)
def test_http_bad_search_options_are_422(
    client: httpx.Client, body: dict[str, Any], detail: str
) -> None:
    response = client.post("/v1/collections/demo/search", json=body)
    assert response.status_code == 422, response.text
    assert detail in json.dumps(response.json())


# --- re-indexing ---------------------------------------------------------------------------


def test_reindex_changes_the_index_type_without_embedding(
    client: httpx.Client, env: dict[str, str]
) -> None:
    before = search(env, "Trans-Siberian Railway", "--mode", "dense", "-k", "5")
    out = ok_json(env, "collections", "reindex", "demo", "--index", "HNSW16", "--json")
    assert out["index"] == "HNSW16" and out["previous"] == "Flat" and out["vectors"] > 70
    view = client.get("/v1/collections/demo").json()
    assert view["index"] == "HNSW16" and view["indexed"] == out["vectors"]
    after = search(env, "Trans-Siberian Railway", "--mode", "dense", "-k", "5")
    assert [h["id"] for h in after] == [h["id"] for h in before]
    response = client.post("/v1/collections/demo/reindex", json={"index": "IVF4,Flat"})
    assert response.status_code == 200, response.text
    assert response.json()["index"] == "IVF4,Flat"
    hits = client.post(
        "/v1/collections/demo/search",
        json={"query": "Trans-Siberian Railway", "k": 5, "mode": "dense", "nprobe": 4},
    ).json()["hits"]
    assert [h["id"] for h in hits] == [h["id"] for h in before]
    bad = client.post("/v1/collections/demo/reindex", json={"index": "NoSuchIndex"})
    assert bad.status_code == 422 and "NoSuchIndex" in bad.json()["detail"]
    assert client.get("/v1/collections/demo").json()["index"] == "IVF4,Flat"
    back = ok_json(env, "collections", "reindex", "demo", "--index", "Flat", "--json")
    assert back["previous"] == "IVF4,Flat"


def test_index_type_of_a_new_collection(tmp_path: Path) -> None:
    env = clean_env(EMBEDQ_DATA_DIR=str(tmp_path / "data"))
    corpus = write_jsonl(tmp_path / "c.jsonl", demo_subset()[:20])
    job = ok_json(env, "index", str(corpus), "-c", "h", "--index", "HNSW8", "-q", "--json")
    assert job["status"] == "succeeded"
    proc = embedq(env, "index", str(corpus), "-c", "h", "--index", "Flat", "-q")
    assert proc.returncode == 2 and "collections reindex h --index Flat" in proc.stderr
    proc = embedq(env, "index", str(corpus), "-c", "bad", "--index", "Nonsense", "-q")
    assert proc.returncode == 2 and "Nonsense" in proc.stderr


# --- k beyond the collection, re-ranking ----------------------------------------------------


def test_k_larger_than_the_collection_returns_every_document(tmp_path: Path) -> None:
    env = clean_env(EMBEDQ_DATA_DIR=str(tmp_path / "data"))
    long_docs = [
        {"id": f"long-{i}", "text": " ".join(f"word{i}x{j} and filler text" for j in range(400))}
        for i in range(3)
    ]
    corpus = write_jsonl(tmp_path / "long.jsonl", long_docs)
    ok_json(env, "index", str(corpus), "-c", "l", "--chunk-tokens", "32", "-q", "--json")
    for mode in ("dense", "sparse", "hybrid"):
        hits = ok_json(env, "search", "l", "filler text", "-k", "50", "--mode", mode, "--json")
        assert sorted(h["id"] for h in hits["hits"]) == ["long-0", "long-1", "long-2"], mode


def tiny_cross_encoder(folder: Path) -> Path:
    """A one-layer BERT cross-encoder with random weights and the bundled model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from embedq.workers.models import resolve_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_path("default"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_rerank_orders_candidates_by_the_cross_encoder(env: dict[str, str], tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    model = tiny_cross_encoder(tmp_path / "ce")
    query = "Trans-Siberian Railway"
    # Dense, 10 candidates: the cross-encoder orders exactly the plain top 10.
    plain = search(env, query, "-k", "10", "--mode", "dense")
    hits = search(
        env, query, "-k", "10", "--mode", "dense", "--rerank", str(model), "--candidates", "10"
    )
    assert {h["id"] for h in hits} == {h["id"] for h in plain}
    expected = CrossEncoder(str(model), device="cpu").predict(
        [(query, h["chunk"]["text"]) for h in hits]
    )
    assert [h["score"] for h in hits] == pytest.approx([float(s) for s in expected], abs=1e-4)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    proc = embedq(env, "search", "demo", query, "--rerank", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "cross-encoder" in proc.stderr


def test_eval_reports_each_mode(env: dict[str, str], tmp_path: Path) -> None:
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    write_jsonl(beir / "corpus.jsonl", [{"_id": d["id"], **d} for d in demo_subset()])
    write_jsonl(
        beir / "queries.jsonl",
        [{"_id": "q1", "text": "Trans-Siberian Railway"}, {"_id": "q2", "text": "harbour"}],
    )
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\trail-002\t1\n")
    out = ok_json(env, "eval", "beir", str(beir), "--collection", "demo", "--json")
    assert set(out["modes"]) == {"dense", "sparse", "hybrid"}
    assert out["mode"] == "hybrid" and out["ndcg@10"] == out["modes"]["hybrid"]["ndcg@10"]
    assert all(scores["ndcg@10"] == 1.0 for scores in out["modes"].values())
