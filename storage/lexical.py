"""The lexical (BM25) index of a collection: a Tantivy index beside the FAISS snapshots.

Units are the collection's windows, keyed by chunk id like the vectors, so one watermark and
the same tombstones drive both indexes. The index lives in ``<collection folder>/lexical/``
and ``lexical.json`` beside it records the watermark: every row up to it is in the index.

Tantivy commits are atomic and cost in proportion to the change, so the single writer commits
on every catch-up (no publish policy). A crash between a commit and the watermark's update is
harmless: the next catch-up first deletes every row above the recorded watermark, then adds
them again. A missing or unreadable index is rebuilt from SQL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import tantivy
from sqlalchemy import select
from sqlalchemy.orm import Session

from embedq.storage.documents import embedding_input
from embedq.storage.files import fsync_dir
from embedq.storage.lexical_tail import TailCache, score
from embedq.storage.models import SEQ_BITS, Chunk, Collection, Document, Tombstone

log = logging.getLogger(__name__)

FOLDER = "lexical"
STATE = "lexical.json"
ANALYZER = "en_bm25"
VERSION = 1
"""Bumped when the schema or analyzer changes: an index of another version is rebuilt."""
PAGE = 5_000
WRITER_HEAP = 64 * 1024 * 1024
MAX_TERMS = 64
"""Query terms kept (the first ones): a pasted document as a query stays cheap."""
_PUNCT = re.compile(r"[^\w\s]+")


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("chunk", indexed=True, fast=True)
    builder.add_integer_field("doc", indexed=True, fast=True)
    builder.add_text_field("body", tokenizer_name=ANALYZER, index_option="freq")
    return builder.build()


def _analyzer() -> tantivy.TextAnalyzer:
    """Words, lower-cased, English stop words out, Snowball English stems."""
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


SCHEMA = _schema()
_ANALYZER = _analyzer()


def analyse(text: str) -> list[str]:
    """A text's terms as the index holds them."""
    return list(_ANALYZER.analyze(text))


def query_terms(text: str) -> list[str]:
    """The distinct analysed terms of a query, in order of first appearance."""
    seen: dict[str, None] = {}
    for term in _ANALYZER.analyze(_PUNCT.sub(" ", text)):
        seen.setdefault(term, None)
    return list(seen)[:MAX_TERMS]


def collection_key(coll: Collection) -> str:
    """What tells a collection from one created again under its name (SQLite may reuse ids)."""
    return f"{coll.id}@{coll.created_at.isoformat()}"


@dataclass(frozen=True, slots=True)
class LexicalState:
    key: str  # see collection_key: a collection created again under the name starts over
    watermark: int
    version: int = VERSION


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)


class LexicalStore:
    """Writes (the single index writer) and reads the lexical indexes under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._readers: dict[str, tuple[tuple[str, int], tantivy.Index]] = {}
        self.tails = TailCache()

    def folder(self, collection: str) -> Path:
        return self.root / collection / FOLDER

    def state(self, collection: str) -> LexicalState | None:
        try:
            raw = json.loads((self.root / collection / STATE).read_text())
            return LexicalState(str(raw["key"]), int(raw["watermark"]), int(raw["version"]))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("unreadable lexical state of %s: %s", collection, exc)
            return None

    # ------------------------------------------------------------------------------ writer

    def catch_up(self, session: Session, coll: Collection, target: int) -> int:
        """Bring the index up to sequence ``target``; returns its watermark. The caller holds
        the collection's writer lock."""
        state = self.state(coll.name)
        folder = self.folder(coll.name)
        key = collection_key(coll)
        fresh = (
            state is None
            or state.key != key
            or state.version != VERSION
            or not tantivy.Index.exists(str(folder))
        )
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            state = LexicalState(key, 0)
        elif state is not None and state.watermark >= target:
            return state.watermark
        assert state is not None
        index = self._open(folder, create=fresh)
        writer = index.writer(WRITER_HEAP, 1)
        base = coll.id << SEQ_BITS
        if state.watermark:
            for chunk in _tombstoned(session, coll.id, state.watermark, target):
                writer.delete_documents_by_term("chunk", chunk)
        # Rows a crashed catch-up committed above the recorded watermark: added again below.
        above = tantivy.Query.range_query(
            SCHEMA, "chunk", tantivy.FieldType.Integer, base | state.watermark, None, False
        )
        writer.delete_documents_by_query(above)
        added = 0
        for rows in _window_pages(session, coll.id, state.watermark, target):
            for chunk, doc, body in rows:
                writer.add_document(tantivy.Document(chunk=chunk, doc=doc, body=body))
            added += len(rows)
        writer.commit()
        writer.wait_merging_threads()
        _write_json(
            self.root / coll.name / STATE,
            {"key": key, "watermark": target, "version": VERSION},
        )
        log.debug("lexical index of %s: %d windows added up to %d", coll.name, added, target)
        return target

    def drop(self, collection: str) -> None:
        shutil.rmtree(self.folder(collection), ignore_errors=True)
        (self.root / collection / STATE).unlink(missing_ok=True)

    def size(self, collection: str) -> int:
        """Bytes of the index files."""
        folder = self.folder(collection)
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    @staticmethod
    def _open(folder: Path, *, create: bool = False) -> tantivy.Index:
        index = tantivy.Index(SCHEMA, path=str(folder), reuse=not create)
        index.register_tokenizer(ANALYZER, _ANALYZER)
        return index

    # ------------------------------------------------------------------------------ reader

    def search(
        self,
        collection: str,
        key: str,
        text: str,
        limit: int,
        docs: Sequence[int] | None = None,
        tail: tuple[int, Callable[[int, int], Iterable[tuple[int, int, str]]]] | None = None,
    ) -> tuple[list[int], list[float]]:
        """The best ``limit`` windows for ``text`` by BM25: chunk ids and scores, best first.
        ``docs`` restricts the search to windows of those documents (their primary keys).
        ``tail``: the collection's sequence number and a reader of the windows in a sequence
        range (``tail_reader``), so that windows written since the last commit are scored
        too (``lexical_tail``)."""
        terms = query_terms(text)
        if not terms or limit <= 0:
            return [], []
        index, floor = self._reader(collection, key)
        ids, scores = self._indexed(index, terms, limit, docs)
        if tail is None or tail[0] <= floor:
            return ids, scores
        held = self.tails.get(collection, key, floor, tail[0], tail[1], analyse)
        searcher = index.searcher() if index is not None else None
        more = score(
            held,
            terms,
            searcher.num_docs if searcher is not None else 0,
            lambda t: searcher.doc_freq("body", t) if searcher is not None else 0,
            set(docs) if docs is not None else None,
        )
        merged = sorted(
            dict(zip([*ids, *more[0]], [*scores, *more[1]], strict=True)).items(),
            key=lambda p: -p[1],
        )[:limit]
        return [c for c, _ in merged], [s for _, s in merged]

    def _indexed(
        self,
        index: tantivy.Index | None,
        terms: list[str],
        limit: int,
        docs: Sequence[int] | None,
    ) -> tuple[list[int], list[float]]:
        if index is None:
            return [], []
        words = [
            (
                tantivy.Occur.Should,
                tantivy.Query.term_query(SCHEMA, "body", term, index_option="freq"),
            )
            for term in terms
        ]
        query = tantivy.Query.boolean_query(words)
        if docs is not None:
            if not docs:
                return [], []
            only = tantivy.Query.term_set_query(SCHEMA, "doc", list(docs))
            query = tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, query), (tantivy.Occur.Must, only)]
            )
        searcher = index.searcher()
        found = searcher.search(query, limit, count=False)
        if not found.hits:
            return [], []
        chunks = searcher.fast_field_values("chunk", [addr for _, addr in found.hits])
        pairs = [(c, float(score)) for c, (score, _) in zip(chunks, found.hits, strict=True)]
        return [int(c) for c, _ in pairs if c is not None], [s for c, s in pairs if c is not None]

    def watermark(self, collection: str, key: str) -> int:
        state = self.state(collection)
        return state.watermark if state is not None and state.key == key else 0

    def _reader(self, collection: str, key: str) -> tuple[tantivy.Index | None, int]:
        """The collection's index, opened once per process and reloaded after a commit
        (the recorded watermark moved, or the index was rebuilt), with the watermark it
        holds everything up to (0 without an index)."""
        state = self.state(collection)
        if state is None or state.key != key or state.version != VERSION:
            return None, 0
        stamp = (key, state.watermark)
        with self._lock:
            cached = self._readers.get(collection)
            if cached is not None and cached[0][0] == key:
                if cached[0] != stamp:
                    cached[1].reload()
                    self._readers[collection] = (stamp, cached[1])
                return cached[1], state.watermark
            folder = self.folder(collection)
            try:
                index = self._open(folder)
                index.reload()
            except ValueError as exc:
                log.warning("unreadable lexical index of %s: %s", collection, exc)
                return None, 0
            self._readers[collection] = (stamp, index)
            return index, state.watermark


def _tombstoned(session: Session, collection_id: int, after: int, upto: int) -> list[int]:
    return list(
        session.scalars(
            select(Tombstone.chunk_id).where(
                Tombstone.collection_id == collection_id,
                Tombstone.seq > after,
                Tombstone.seq <= upto,
            )
        )
    )


def tail_reader(
    session: Session, collection_id: int
) -> Callable[[int, int], Iterator[tuple[int, int, str]]]:
    """Reads (chunk id, document id, window text) of the collection's rows in a sequence
    range ``(after, upto]``: what a search gives ``LexicalStore.search`` as its tail."""

    def read(after: int, upto: int) -> Iterator[tuple[int, int, str]]:
        for page in _window_pages(session, collection_id, after, upto):
            yield from page

    return read


def _window_pages(
    session: Session, collection_id: int, after: int, upto: int
) -> Iterator[list[tuple[int, int, str]]]:
    """(chunk id, document id, window text) of the rows in ``(after, upto]``, in pages; each
    page reads the text of its documents once."""
    base = collection_id << SEQ_BITS
    last = base | after
    while True:
        rows = session.execute(
            select(Chunk.id, Chunk.document_id, Chunk.start, Chunk.end)
            .where(Chunk.id > last, Chunk.id <= base | upto)
            .order_by(Chunk.id)
            .limit(PAGE)
        ).all()
        if not rows:
            return
        wanted = sorted({r.document_id for r in rows})
        texts = {
            d.id: embedding_input(d.title, d.text)
            for d in session.execute(
                select(Document.id, Document.title, Document.text).where(Document.id.in_(wanted))
            )
        }
        yield [
            (r.id, r.document_id, texts[r.document_id][r.start : r.end])
            for r in rows
            if r.document_id in texts
        ]
        last = rows[-1].id
