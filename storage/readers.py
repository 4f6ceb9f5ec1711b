"""Streaming corpus readers: JSONL, CSV, TSV, plain-text files and folders of text files.

Every input is read in binary mode, one line at a time, and each line is decoded on its own,
so a 10 GB file never sits in memory and one bad line (invalid JSON, invalid UTF-8, a missing
field) becomes a :class:`Rejected` item while the rest of the input goes on. Only an input that
cannot be read at all (not found, binary, unknown format, a CSV without the required columns)
raises :class:`CorpusError`.

Formats
-------
``jsonl``
    One JSON object per line: ``id`` (string or integer; ``_id`` is accepted when ``id`` is
    absent, as in BEIR corpora), ``text`` (non-blank string), optional ``title`` (string or
    null) and optional ``meta`` (object or null; ``metadata`` is accepted when ``meta`` is
    absent).
``csv`` / ``tsv``
    A header row naming at least ``id`` and ``text`` (``_id`` is accepted for ``id``),
    optionally ``title``; every other column goes into ``meta`` as a string. Quoted fields may
    span lines; a record is reported at the line where it starts. A malformed record (an
    unterminated quote, a stray character after a closing quote) costs only its first line:
    reading resumes on the line after it, so later valid rows are not lost.
``text``
    A whole file is one document. A folder is walked recursively in sorted order over
    ``*.txt`` and ``*.md`` files (hidden entries are skipped); each file's id is its path
    relative to the folder, with forward slashes.

Within one source, the first record with a given id wins; later ones are rejected with
``"duplicate id"``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from embedq.storage.models import Document

__all__ = [
    "FORMATS",
    "MAX_ID_CHARS",
    "CorpusError",
    "Record",
    "Rejected",
    "lone_surrogate",
    "nul_field",
    "read_corpus",
    "record_from_object",
]

_SURROGATE = re.compile("[\ud800-\udfff]")

MAX_ID_CHARS: int = Document.__table__.c.external_id.type.length  # type: ignore[attr-defined]
"""Longest document id, in characters: the width of the id column."""

FORMATS: tuple[str, ...] = ("jsonl", "csv", "tsv", "text")
"""Values accepted by ``read_corpus(fmt=...)``."""

_EXTENSIONS: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "text",
    ".md": "text",
}
_TEXT_SUFFIXES = frozenset({".txt", ".md"})
_FOLDER = "folder"
_STDIN = "-"
_SNIFF_BYTES = 8192
_BOM = b"\xef\xbb\xbf"
_DELIMITERS = {"csv": ",", "tsv": "\t"}
_SUPPORTED = "supported: .jsonl, .ndjson, .json, .csv, .tsv, .txt, .md, a folder, or fmt=" + (
    "|".join(FORMATS)
)


@dataclass(frozen=True, slots=True)
class Record:
    """One document read from a corpus."""

    id: str
    text: str
    title: str | None
    meta: dict[str, Any] | None
    source: str
    line: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """One input record that could not be used, with the line where it starts and why."""

    source: str
    line: int
    reason: str
    id: str | None = None


class CorpusError(Exception):
    """A whole input that cannot be read at all (not found, binary, unknown format)."""


Item = Record | Rejected


def read_corpus(
    paths: Sequence[str],
    *,
    fmt: str | None = None,
    stdin: BinaryIO | None = None,
    stdin_id: str | None = None,
) -> Iterator[Record | Rejected]:
    """Stream records from files, folders or ``"-"`` (stdin), in the order given.

    ``fmt`` forces ``"jsonl"``, ``"csv"``, ``"tsv"`` or ``"text"`` for every input; by default
    the format follows the extension (``.jsonl``/``.ndjson``/``.json``, ``.csv``, ``.tsv``,
    ``.txt``/``.md``), a folder is read as text files and stdin as JSONL. ``stdin`` replaces
    ``sys.stdin.buffer`` for ``"-"``. Stdin read as ``"text"`` is one document whose id is
    ``stdin_id``, or ``stdin-`` and 16 hex digits of the text's SHA-256: piping another text
    adds a document instead of replacing the last one, and piping the same text again is a
    no-op.

    All inputs are checked (format, existence, binary content) before the first item is
    yielded, so a bad path fails the whole call before anything is produced.
    """
    forced = _check_fmt(fmt)
    plan = [(path, _plan(path, forced)) for path in paths]
    for path, kind in plan:
        yield from _read_input(path, kind, stdin, stdin_id)


# --------------------------------------------------------------------------------- planning


def _check_fmt(fmt: str | None) -> str | None:
    if fmt is None:
        return None
    name = fmt.strip().lower()
    if name not in FORMATS:
        raise CorpusError(f"unknown format {fmt!r} ({_SUPPORTED})")
    return name


def _plan(path: str, fmt: str | None) -> str:
    """Return the format of one input, or ``_FOLDER``; raise CorpusError if it cannot be read.

    Binary content is reported before an unknown extension: it is the more useful message.
    """
    if path == _STDIN:
        return fmt or "jsonl"
    if os.path.isdir(path):
        if fmt not in (None, "text"):
            raise CorpusError(f"{path}: is a folder; folders are read with the text format only")
        return _FOLDER
    if not os.path.exists(path):
        raise CorpusError(f"{path}: not found")
    if os.path.isfile(path):
        _sniff_file(path)
    if fmt is not None:
        return fmt
    ext = os.path.splitext(path)[1].lower()
    kind = _EXTENSIONS.get(ext)
    if kind is None:
        shown = repr(ext) if ext else "no extension"
        raise CorpusError(f"{path}: unknown format ({shown}; {_SUPPORTED})")
    return kind


def _sniff_file(path: str) -> None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise CorpusError(f"{path}: cannot open ({exc.strerror or exc})") from exc
    _check_not_binary(head, path)


def _check_not_binary(head: bytes, source: str) -> None:
    if b"\0" in head[:_SNIFF_BYTES]:
        raise CorpusError(f"{source}: not a text file (binary data)")


# ---------------------------------------------------------------------------------- inputs


def _read_input(
    path: str, kind: str, stdin: BinaryIO | None, stdin_id: str | None = None
) -> Iterator[Item]:
    if kind == _FOLDER:
        yield from _read_folder(path)
        return
    if path == _STDIN:
        stream: BinaryIO = stdin if stdin is not None else sys.stdin.buffer
        yield from _read_stream(stream, _STDIN, kind, stdin_id or "")
        return
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with block below
    except OSError as exc:
        raise CorpusError(f"{path}: cannot open ({exc.strerror or exc})") from exc
    with fh:
        yield from _read_stream(fh, path, kind, os.path.basename(path))


def _read_stream(stream: BinaryIO, source: str, kind: str, doc_id: str) -> Iterator[Item]:
    if kind == "text":
        data = stream.read()
        _check_not_binary(data, source)
        yield _document(data, source, doc_id or f"stdin-{hashlib.sha256(data).hexdigest()[:16]}")
        return
    lines = _numbered_lines(stream, source)
    if kind == "jsonl":
        items = _read_jsonl(lines, source)
    else:
        items = _read_delimited(lines, source, _DELIMITERS[kind])
    yield from _drop_duplicates(items)


def _numbered_lines(stream: BinaryIO, source: str) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_line)`` pairs; the BOM is stripped, binary data refused."""
    head = stream.read(_SNIFF_BYTES)
    _check_not_binary(head, source)
    if head.startswith(_BOM):
        head = head[len(_BOM) :]
    number = 0
    *complete, tail = head.split(b"\n")
    for raw in complete:
        number += 1
        yield number, raw + b"\n"
    rest = stream.readline()
    if tail or rest:
        number += 1
        yield number, tail + rest
    for raw in iter(stream.readline, b""):
        number += 1
        yield number, raw


def _drop_duplicates(items: Iterable[Item]) -> Iterator[Item]:
    seen: set[str] = set()
    for item in items:
        if isinstance(item, Record):
            if item.id in seen:
                item = Rejected(item.source, item.line, "duplicate id", item.id)
            else:
                seen.add(item.id)
        yield item


def _text_problem(text: str) -> str | None:
    if not text:
        return "empty text"
    if not text.strip():
        return "blank text"
    return None


def _blank_to_none(value: str | None) -> str | None:
    return value if value is not None and value.strip() else None


# ----------------------------------------------------------------------------------- JSONL


def _read_jsonl(lines: Iterable[tuple[int, bytes]], source: str) -> Iterator[Item]:
    for number, raw in lines:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield Rejected(source, number, "invalid UTF-8")
            continue
        if text.strip():
            yield _json_item(text, source, number)


def _json_item(text: str, source: str, line: int) -> Item:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return Rejected(source, line, "invalid JSON")
    return record_from_object(obj, source=source, line=line)


def record_from_object(obj: Any, *, source: str, line: int) -> Record | Rejected:
    """Validate one already decoded JSON value exactly as a JSONL line is validated.

    For records that arrive as parsed JSON (an HTTP request body, say): ``line`` is the
    position to report, ``source`` where the record came from. Duplicate ids are not checked
    here; that is a property of a whole source.
    """
    if not isinstance(obj, dict):
        return Rejected(source, line, "not an object")
    doc_id, problem = _json_id(obj)
    if doc_id is None:
        return Rejected(source, line, problem or "missing id")
    problem = _json_fields_problem(obj)
    if problem is not None:
        return Rejected(source, line, problem, doc_id)
    meta = obj["meta"] if "meta" in obj else obj.get("metadata")
    return _storable(
        Record(doc_id, obj["text"], _blank_to_none(obj.get("title")), meta, source, line)
    )


def _json_id(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    raw = obj.get("id")
    if raw is None:
        raw = obj.get("_id")
    if raw is None:
        return None, "missing id"
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return None, "id not a string or number"
    doc_id = str(raw)
    if not doc_id.strip():
        return None, "empty id"
    if lone_surrogate(doc_id) is not None:
        return None, "invalid Unicode in id (a lone surrogate escape)"
    return doc_id, None


def _json_fields_problem(obj: dict[str, Any]) -> str | None:
    text = obj.get("text")
    if text is None:
        return "missing text"
    if not isinstance(text, str):
        return "text not a string"
    problem = _text_problem(text)
    if problem is not None:
        return problem
    title = obj.get("title")
    if title is not None and not isinstance(title, str):
        return "title not a string"
    meta = obj["meta"] if "meta" in obj else obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        return "meta not an object"
    for field, value in (("text", text), ("title", title), ("meta", meta)):
        if lone_surrogate(value) is not None:
            return f"invalid Unicode in {field} (a lone surrogate escape)"
    return None


def _storable(record: Record) -> Record | Rejected:
    """The record, or why a database cannot store it: an id wider than the id column, or a NUL
    character (PostgreSQL's text and JSONB cannot hold one; SQLite would, so both back ends
    refuse it alike)."""
    reason = None
    if len(record.id) > MAX_ID_CHARS:
        reason = f"id too long ({len(record.id)} characters; at most {MAX_ID_CHARS})"
    else:
        fields = {"id": record.id, "text": record.text, "title": record.title, "meta": record.meta}
        field = nul_field(fields)
        if field is not None:
            reason = f"NUL character (\\u0000) in {field}"
    if reason is None:
        return record
    return Rejected(record.source, record.line, reason, record.id)


def nul_field(fields: dict[str, Any]) -> str | None:
    """The name of the first field whose value holds a NUL character, at any depth."""
    for name, value in fields.items():
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if "\0" in item:
                    return name
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return None


def lone_surrogate(value: Any) -> str | None:
    """The first string (a key or a value, at any depth) that UTF-8 cannot carry: JSON's
    ``"\\ud800"`` escapes decode to lone surrogates, which no database or tokenizer takes."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


# ------------------------------------------------------------------------------- CSV / TSV


class _LineFeed:
    """Decoded lines for ``csv.reader``, remembering which lines the current record used.

    After a malformed record, :meth:`rewind` pushes back every line of it but the first, so
    parsing resumes on the line after the one where the bad record started. The lines held
    back are bounded by the csv module's field size limit.
    """

    def __init__(self, lines: Iterable[tuple[int, bytes]]) -> None:
        self._lines = iter(lines)
        self._pending: deque[tuple[int, str, bool]] = deque()
        self.taken: list[tuple[int, str, bool]] = []

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        if self._pending:
            item = self._pending.popleft()
        else:
            number, raw = next(self._lines)
            item = (number, *_decode_line(raw))
        self.taken.append(item)
        return item[1]

    def start(self) -> None:
        self.taken = []

    @property
    def first_line(self) -> int:
        return self.taken[0][0]

    @property
    def is_blank(self) -> bool:
        return len(self.taken) == 1 and not self.taken[0][1].strip()

    @property
    def valid_utf8(self) -> bool:
        return all(ok for _, _, ok in self.taken)

    def rewind(self) -> None:
        self._pending.extendleft(reversed(self.taken[1:]))
        self.taken = []


def _decode_line(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="surrogateescape"), False


def _csv_problem(exc: csv.Error) -> str:
    message = str(exc)
    if "unexpected end of data" in message:
        return "unterminated quote"
    if "field larger than field limit" in message:
        return "field too large"
    if "expected after" in message:
        return "unexpected character after quote"
    if "new-line character" in message:
        return "carriage return in unquoted field"
    return "malformed CSV"


def _csv_rows(
    lines: Iterable[tuple[int, bytes]], delimiter: str
) -> Iterator[tuple[int, list[str] | str, bool]]:
    """Yield ``(start_line, row, valid_utf8)``; ``row`` is a problem string for a bad record."""
    feed = _LineFeed(lines)
    reader = csv.reader(feed, delimiter=delimiter, strict=True)
    while True:
        feed.start()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield feed.first_line, _csv_problem(exc), True
            feed.rewind()
            reader = csv.reader(feed, delimiter=delimiter, strict=True)
            continue
        if row and not feed.is_blank:
            yield feed.first_line, row, feed.valid_utf8


@dataclass(frozen=True, slots=True)
class _Columns:
    width: int
    id: int
    text: int
    title: int | None
    meta: tuple[tuple[int, str], ...]


def _columns(header: list[str], source: str) -> _Columns:
    names = [name.strip() for name in header]
    lowered = [name.lower() for name in names]

    def find(*wanted: str) -> int | None:
        for name in wanted:
            if name in lowered:
                return lowered.index(name)
        return None

    id_col, text_col, title_col = find("id", "_id"), find("text"), find("title")
    if id_col is None or text_col is None:
        missing = [n for n, col in (("id", id_col), ("text", text_col)) if col is None]
        raise CorpusError(
            f"{source}: header lacks required column(s) {', '.join(missing)} "
            f"(found: {', '.join(names) or 'nothing'})"
        )
    used = {id_col, text_col, title_col}
    meta = tuple((i, name) for i, name in enumerate(names) if i not in used)
    return _Columns(len(names), id_col, text_col, title_col, meta)


def _row_item(row: list[str], cols: _Columns, source: str, line: int, valid: bool) -> Item:
    if len(row) != cols.width:
        return Rejected(source, line, f"expected {cols.width} fields, got {len(row)}")
    if not valid:
        return Rejected(source, line, "invalid UTF-8")
    doc_id = row[cols.id]
    if not doc_id.strip():
        return Rejected(source, line, "empty id")
    text = row[cols.text]
    problem = _text_problem(text)
    if problem is not None:
        return Rejected(source, line, problem, doc_id)
    title = _blank_to_none(row[cols.title]) if cols.title is not None else None
    meta = {name: row[i] for i, name in cols.meta} or None
    return _storable(Record(doc_id, text, title, meta, source, line))


def _read_delimited(
    lines: Iterable[tuple[int, bytes]], source: str, delimiter: str
) -> Iterator[Item]:
    rows = _csv_rows(lines, delimiter)
    first = next(rows, None)
    if first is None:
        return
    line, header, valid = first
    if isinstance(header, str) or not valid:
        problem = header if isinstance(header, str) else "invalid UTF-8"
        raise CorpusError(f"{source}: unreadable header on line {line} ({problem})")
    cols = _columns(header, source)
    for line, row, valid in rows:
        if isinstance(row, str):
            yield Rejected(source, line, row)
        else:
            yield _row_item(row, cols, source, line, valid)


# ------------------------------------------------------------------------------ text files


def _document(data: bytes, source: str, doc_id: str) -> Item:
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return Rejected(source, 1, "invalid UTF-8", doc_id)
    problem = _text_problem(text)
    if problem is not None:
        return Rejected(source, 1, problem, doc_id)
    return _storable(Record(doc_id, text, None, None, source, 1))


def _read_folder(folder: str) -> Iterator[Item]:
    for path in _walk(folder):
        doc_id = os.path.relpath(path, folder).replace(os.sep, "/")
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            yield Rejected(path, 1, "cannot read file", doc_id)
            continue
        if b"\0" in data[:_SNIFF_BYTES]:
            yield Rejected(path, 1, "not a text file", doc_id)
        else:
            yield _document(data, path, doc_id)


def _walk(folder: str) -> Iterator[str]:
    """Yield ``*.txt`` and ``*.md`` files under ``folder``, depth first, sorted by name."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as exc:
        raise CorpusError(f"{folder}: cannot list folder ({exc.strerror or exc})") from exc
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(entry.path)
        elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in _TEXT_SUFFIXES:
            yield entry.path
