"""Unit tests for storage.readers: JSONL, CSV, TSV, text files, folders and stdin."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from embedq.storage import readers
from embedq.storage.readers import CorpusError, Record, Rejected, read_corpus

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BAD = SHARED / "bad"

needs_shared = pytest.mark.skipif(
    not BAD.is_dir(),
    reason=f"shared test data not found at {SHARED} (a fresh clone has no ../shared)",
)


def records(items: list[Record | Rejected]) -> list[Record]:
    return [item for item in items if isinstance(item, Record)]


def rejected(items: list[Record | Rejected]) -> list[Rejected]:
    return [item for item in items if isinstance(item, Rejected)]


def read(*paths: Path | str, **kwargs: Any) -> list[Record | Rejected]:
    return list(read_corpus([str(p) for p in paths], **kwargs))


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------ shared bad data


@needs_shared
def test_mixed_jsonl_matches_expected() -> None:
    expected = json.loads((BAD / "mixed.expected.json").read_text(encoding="utf-8"))
    items = read(BAD / "mixed.jsonl")

    assert [r.id for r in records(items)] == expected["valid_ids"]
    assert [(r.line, r.reason) for r in rejected(items)] == [
        (e["line"], e["reason"]) for e in expected["rejected"]
    ]
    lines = {item.line for item in items}
    assert not lines & set(expected["blank_lines"])
    assert all(item.source == str(BAD / "mixed.jsonl") for item in items)


@needs_shared
def test_mixed_jsonl_record_contents() -> None:
    by_id = {r.id: r for r in records(read(BAD / "mixed.jsonl"))}

    assert by_id["g1"].line == 1
    assert by_id["g1"].text == "The committee approved the annual budget after a long debate."
    assert by_id["g2"].title == "날씨"
    assert by_id["g2"].text.startswith("오늘은")
    assert by_id["g3"].meta == {"lang": "en", "n": 3}
    assert "😀" in by_id["g3"].text
    assert by_id["42"].line == 13
    assert by_id["g7"].text == "Line one.\r\nLine two with CRLF inside the text."
    duplicate = [r for r in rejected(read(BAD / "mixed.jsonl")) if r.reason == "duplicate id"]
    assert duplicate == [Rejected(str(BAD / "mixed.jsonl"), 17, "duplicate id", "g1")]


@needs_shared
def test_mixed_csv_unterminated_quote_does_not_swallow_the_rest() -> None:
    source = str(BAD / "mixed.csv")
    items = read(BAD / "mixed.csv")

    assert items == [
        Record("c1", "A quoted, comma-separated text", "T1", None, source, 2),
        Rejected(source, 3, "unterminated quote"),
        Record("c3", "plain text", None, None, source, 4),
    ]


@needs_shared
def test_bom_is_stripped() -> None:
    items = read(BAD / "bom.jsonl")
    assert [(r.id, r.line) for r in records(items)] == [("bom1", 1)]
    assert rejected(items) == []


@needs_shared
def test_empty_file_yields_nothing() -> None:
    assert read(BAD / "empty.jsonl") == []


@needs_shared
@pytest.mark.parametrize("fmt", [None, "jsonl", "csv", "text"])
def test_binary_file_is_a_corpus_error(fmt: str | None) -> None:
    path = BAD / "binary.bin"
    with pytest.raises(CorpusError) as info:
        read(path, fmt=fmt)
    assert str(info.value) == f"{path}: not a text file (binary data)"


@pytest.mark.skipif(
    not (SHARED / "scifact" / "corpus.jsonl").is_file(),
    reason=f"shared SciFact corpus not found under {SHARED}",
)
def test_beir_corpus_uses_underscore_id() -> None:
    items = read(SHARED / "scifact" / "corpus.jsonl")
    assert rejected(items) == []
    docs = records(items)
    assert len(docs) == 5183
    assert docs[0].id == "4983"
    assert docs[0].title and docs[0].title.startswith("Microstructural development")
    assert [d.line for d in docs[:3]] == [1, 2, 3]


# ---------------------------------------------------------------------------------- JSONL


def test_jsonl_field_rules(tmp_path: Path) -> None:
    lines = [
        {"id": "a", "text": "ok", "title": None, "meta": None},
        {"id": True, "text": "bool id"},
        {"id": 1.5, "text": "float id"},
        {"id": ["x"], "text": "list id"},
        {"id": "b", "text": "t", "title": 7},
        {"id": "c", "text": None},
        {"id": "   ", "text": "blank id"},
        {"_id": "d", "text": "beir id", "title": "T", "metadata": {"k": 1}},
        {"id": "e", "_id": "ignored", "text": "id wins over _id", "title": ""},
        {"id": -7, "text": "negative int id"},
    ]
    path = write(tmp_path / "c.ndjson", "".join(json.dumps(x) + "\n" for x in lines))
    items = read(path)

    assert [(r.id, r.line) for r in records(items)] == [("a", 1), ("d", 8), ("e", 9), ("-7", 10)]
    assert [(r.line, r.reason, r.id) for r in rejected(items)] == [
        (2, "id not a string or number", None),
        (3, "id not a string or number", None),
        (4, "id not a string or number", None),
        (5, "title not a string", "b"),
        (6, "missing text", "c"),
        (7, "empty id", None),
    ]
    by_id = {r.id: r for r in records(items)}
    assert by_id["a"].title is None and by_id["a"].meta is None
    assert by_id["d"].title == "T" and by_id["d"].meta == {"k": 1}
    assert by_id["e"].title is None


def test_jsonl_crlf_blank_lines_and_line_numbers(tmp_path: Path) -> None:
    data = b'{"id": "a", "text": "one"}\r\n\r\n   \r\n{"id": "b", "text": "two"}\r\n\r\n'
    items = read(write(tmp_path / "c.jsonl", data))
    assert [(r.id, r.text, r.line) for r in records(items)] == [("a", "one", 1), ("b", "two", 4)]
    assert rejected(items) == []


def test_jsonl_last_line_without_newline(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", '{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}')
    assert [(r.id, r.line) for r in records(read(path))] == [("a", 1), ("b", 2)]


def test_jsonl_korean_and_emoji(tmp_path: Path) -> None:
    docs = [
        {"id": "ko", "text": "한국어 문장은 잘 읽혀야 한다.", "title": "제목"},
        {"id": "🙂", "text": "emoji 🎉👩‍💻 and combining é"},
    ]
    path = write(tmp_path / "u.jsonl", "\n".join(json.dumps(d, ensure_ascii=False) for d in docs))
    got = records(read(path))
    assert [(r.id, r.text, r.title) for r in got] == [
        ("ko", "한국어 문장은 잘 읽혀야 한다.", "제목"),
        ("🙂", "emoji 🎉👩‍💻 and combining é", None),
    ]


def test_invalid_utf8_line_does_not_stop_the_file(tmp_path: Path) -> None:
    data = b'{"id": "a", "text": "x"}\n{"id": "b", "text": "\xc3\x28"}\n{"id": "c", "text": "z"}\n'
    items = read(write(tmp_path / "c.jsonl", data))
    assert [r.id for r in records(items)] == ["a", "c"]
    assert [(r.line, r.reason) for r in rejected(items)] == [(2, "invalid UTF-8")]


def test_lone_surrogate_escapes_are_rejected_per_record(tmp_path: Path) -> None:
    lines = [
        r'{"id": "a", "text": "fine"}',
        r'{"id": "b", "text": "bad \ud800 text"}',
        r'{"id": "c\udfff", "text": "bad id"}',
        r'{"id": "d", "text": "ok", "meta": {"k": "\ud834"}}',
        r'{"id": "e", "text": "a pair \ud83d\ude00 is fine"}',
    ]
    items = read(write(tmp_path / "s.jsonl", "\n".join(lines)))
    assert [(r.id, r.text) for r in records(items)] == [("a", "fine"), ("e", "a pair 😀 is fine")]
    assert [(r.line, r.id, r.reason) for r in rejected(items)] == [
        (2, "b", "invalid Unicode in text (a lone surrogate escape)"),
        (3, None, "invalid Unicode in id (a lone surrogate escape)"),
        (4, "d", "invalid Unicode in meta (a lone surrogate escape)"),
    ]


def test_duplicate_ids_are_per_source(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", '{"id": "x", "text": "first"}\n{"id": "x", "text": "again"}\n')
    b = write(tmp_path / "b.jsonl", '{"id": "x", "text": "other file"}\n')
    items = read(a, b)
    assert [(r.source, r.id, r.text) for r in records(items)] == [
        (str(a), "x", "first"),
        (str(b), "x", "other file"),
    ]
    assert rejected(items) == [Rejected(str(a), 2, "duplicate id", "x")]


def test_numeric_and_string_id_collide(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", '{"id": 42, "text": "a"}\n{"id": "42", "text": "b"}\n')
    items = read(path)
    assert [r.text for r in records(items)] == ["a"]
    assert [r.reason for r in rejected(items)] == ["duplicate id"]


# -------------------------------------------------------------------------------- CSV/TSV


def test_csv_quoted_multiline_fields_meta_and_line_numbers(tmp_path: Path) -> None:
    data = (
        "id,title,text,lang\r\n"
        'a,,"first line\r\nsecond line",en\r\n'
        "\r\n"
        'b,"Title, with comma","He said ""hi""",ko\r\n'
        'c,T,"para one\n\npara two\n",\r\n'
        "d,,plain,fr\r\n"
    )
    path = write(tmp_path / "c.csv", data)
    items = read(path)
    assert rejected(items) == []
    assert [(r.id, r.line) for r in records(items)] == [("a", 2), ("b", 5), ("c", 6), ("d", 10)]
    by_id = {r.id: r for r in records(items)}
    assert by_id["a"].text == "first line\r\nsecond line"
    assert by_id["a"].title is None
    assert by_id["a"].meta == {"lang": "en"}
    assert by_id["b"].title == "Title, with comma"
    assert by_id["b"].text == 'He said "hi"'
    assert by_id["c"].text == "para one\n\npara two\n"
    assert by_id["c"].meta == {"lang": ""}
    assert all(r.source == str(path) for r in records(items))


def test_csv_bad_rows_are_rejected_and_reading_goes_on(tmp_path: Path) -> None:
    data = (
        b"id,text\n"
        b"a,one\n"
        b"b,two,extra\n"
        b"c\n"
        b'd,"closed"oops\n'
        b",no id\n"
        b"e,\n"
        b"f,   \n"
        b"g,bad \xff byte\n"
        b"a,duplicate\n"
        b"h,last\n"
    )
    items = read(write(tmp_path / "c.csv", data))
    assert [(r.id, r.line) for r in records(items)] == [("a", 2), ("h", 11)]
    assert [(r.line, r.reason) for r in rejected(items)] == [
        (3, "expected 2 fields, got 3"),
        (4, "expected 2 fields, got 1"),
        (5, "unexpected character after quote"),
        (6, "empty id"),
        (7, "empty text"),
        (8, "blank text"),
        (9, "invalid UTF-8"),
        (10, "duplicate id"),
    ]


def test_csv_unterminated_quote_reports_start_line_and_recovers(tmp_path: Path) -> None:
    data = 'id,text\na,ok\nb,"never closed\nc,fine\n\nd,"multi\nline"\ne,last\n'
    source = str(write(tmp_path / "c.csv", data))
    items = read(source)
    # The quote opened on line 3 is closed by the one on line 6, so that record is malformed;
    # reading resumes on line 4 and nothing valid after the bad line is lost.
    assert [(r.id, r.line) for r in records(items)] == [("a", 2), ("c", 4), ("d", 6), ("e", 8)]
    assert rejected(items) == [Rejected(source, 3, "unexpected character after quote")]
    assert records(items)[2].text == "multi\nline"


def test_csv_unterminated_quote_at_end_of_file(tmp_path: Path) -> None:
    data = 'id,text\na,ok\nb,"never closed\nmore text\nc,fine\n\nd,done'
    source = str(write(tmp_path / "c.csv", data))
    items = read(source)
    assert [(r.id, r.line) for r in records(items)] == [("a", 2), ("c", 5), ("d", 7)]
    assert rejected(items) == [
        Rejected(source, 3, "unterminated quote"),
        Rejected(source, 4, "expected 2 fields, got 1"),
    ]


def test_csv_header_rules(tmp_path: Path) -> None:
    missing = write(tmp_path / "m.csv", "id,body\n1,x\n")
    with pytest.raises(CorpusError, match=r"m\.csv: header lacks required column\(s\) text"):
        read(missing)

    beir = write(tmp_path / "b.csv", "\ufeff\n _id , Title ,TEXT\n7,T,hello\n")
    assert records(read(beir)) == [Record("7", "hello", "T", None, str(beir), 3)]

    header_only = write(tmp_path / "h.csv", "id,text\n")
    assert read(header_only) == []
    assert read(write(tmp_path / "e.csv", "")) == []
    assert read(write(tmp_path / "blank.csv", "\n  \n")) == []


def test_tsv_with_quotes_and_korean(tmp_path: Path) -> None:
    data = (
        "id\ttext\tsource\n"
        "k1\t한국어 텍스트 🚀\twiki\n"
        'k2\t"tab\tand\nnewline"\tweb\n'
        "k3\ttoo\tmany\tfields\n"
    )
    path = write(tmp_path / "c.tsv", data)
    items = read(path)
    assert [(r.id, r.text, r.meta, r.line) for r in records(items)] == [
        ("k1", "한국어 텍스트 🚀", {"source": "wiki"}, 2),
        ("k2", "tab\tand\nnewline", {"source": "web"}, 3),
    ]
    assert [(r.line, r.reason) for r in rejected(items)] == [(5, "expected 3 fields, got 4")]


def test_fmt_forces_the_format(tmp_path: Path) -> None:
    path = write(tmp_path / "data.txt", "id,text\n1,forced csv\n")
    assert [(r.id, r.text) for r in records(read(path, fmt="csv"))] == [("1", "forced csv")]
    as_text = records(read(path))
    assert [(r.id, r.text) for r in as_text] == [("data.txt", "id,text\n1,forced csv\n")]


# ----------------------------------------------------------------------- text and folders


def test_folder_recurses_sorted_over_txt_and_md(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root / "b.txt", "bee")
    write(root / "a" / "z.md", "# zed\n\nmarkdown 한국어 😀")
    write(root / "a" / "deep" / "x.TXT", "deep")
    write(root / "c.md", "\ufeffsee")
    write(root / "ignored.json", '{"id": "no"}')
    write(root / "notes.rst", "ignored")
    write(root / ".hidden" / "h.txt", "hidden")
    write(root / "empty.txt", "")
    write(root / "blank.md", " \n\t\n")
    write(root / "latin1.txt", b"caf\xe9")

    items = read(root)
    assert [(r.id, r.text) for r in records(items)] == [
        ("a/deep/x.TXT", "deep"),
        ("a/z.md", "# zed\n\nmarkdown 한국어 😀"),
        ("b.txt", "bee"),
        ("c.md", "see"),
    ]
    assert [(r.id, r.reason) for r in rejected(items)] == [
        ("blank.md", "blank text"),
        ("empty.txt", "empty text"),
        ("latin1.txt", "invalid UTF-8"),
    ]
    first = records(items)[0]
    assert first.source == str(root / "a" / "deep" / "x.TXT")
    assert (first.line, first.title, first.meta) == (1, None, None)


def test_folder_with_other_fmt_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.txt", "x")
    assert [r.id for r in records(read(tmp_path / "d", fmt="text"))] == ["a.txt"]
    with pytest.raises(CorpusError, match="folder"):
        read(tmp_path / "d", fmt="jsonl")


def test_single_text_file(tmp_path: Path) -> None:
    path = write(tmp_path / "sub" / "note.md", "Some notes.\n")
    assert read(path) == [Record("note.md", "Some notes.\n", None, None, str(path), 1)]
    binary = write(tmp_path / "bin.txt", b"abc\x00def")
    with pytest.raises(CorpusError, match="not a text file"):
        read(binary)


# ------------------------------------------------------------------------------- failures


def test_missing_path_fails_before_anything_is_yielded(tmp_path: Path) -> None:
    good = write(tmp_path / "a.jsonl", '{"id": "a", "text": "x"}\n')
    missing = tmp_path / "nope.jsonl"
    iterator = read_corpus([str(good), str(missing)])
    with pytest.raises(CorpusError) as info:
        next(iterator)
    assert str(info.value) == f"{missing}: not found"


def test_unknown_extension_names_supported_formats(tmp_path: Path) -> None:
    path = write(tmp_path / "data.parquet", "x")
    with pytest.raises(CorpusError) as info:
        read(path)
    message = str(info.value)
    assert message.startswith(f"{path}: unknown format")
    assert "\n" not in message
    for name in (".jsonl", ".csv", ".tsv", ".txt", ".md", "jsonl|csv|tsv|text"):
        assert name in message


def test_unknown_fmt_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", "")
    with pytest.raises(CorpusError, match="unknown format 'xml'"):
        read(path, fmt="xml")


# ---------------------------------------------------------------------------------- stdin


def test_stdin_defaults_to_jsonl() -> None:
    data = '\ufeff{"id": 1, "text": "from stdin 🎈"}\n\n{"id": 2, "text": ""}\n'.encode()
    items = read("-", stdin=io.BytesIO(data))
    assert items == [
        Record("1", "from stdin 🎈", None, None, "-", 1),
        Rejected("-", 3, "empty text", "2"),
    ]


def test_stdin_with_forced_formats() -> None:
    csv_items = read("-", fmt="csv", stdin=io.BytesIO(b"id,text\nx,y\n"))
    assert csv_items == [Record("x", "y", None, None, "-", 2)]
    text_items = read("-", fmt="text", stdin=io.BytesIO("전체 문서".encode()))
    digest = hashlib.sha256("전체 문서".encode()).hexdigest()[:16]
    assert text_items == [Record(f"stdin-{digest}", "전체 문서", None, None, "-", 1)]
    named = list(read_corpus(["-"], fmt="text", stdin=io.BytesIO(b"a note"), stdin_id="note-1"))
    assert named == [Record("note-1", "a note", None, None, "-", 1)]
    with pytest.raises(CorpusError, match=r"^-: not a text file \(binary data\)$"):
        read("-", stdin=io.BytesIO(b"\x00\x01\x02"))


# ------------------------------------------------------------------------------ streaming


class EndlessLines(io.RawIOBase):
    """A binary stream that never ends and counts the bytes handed out."""

    def __init__(self, header: bytes, make_line: Any) -> None:
        self._buffer = header
        self._make_line = make_line
        self._n = 0
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while len(self._buffer) < len(b):
            self._n += 1
            self._buffer += self._make_line(self._n)
        size = len(b)
        b[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        self.bytes_read += size
        return size


def take(iterator: Iterator[Record | Rejected], n: int) -> list[Record | Rejected]:
    return [next(iterator) for _ in range(n)]


def test_streams_an_endless_jsonl_input() -> None:
    raw = EndlessLines(b"", lambda n: f'{{"id": "d{n}", "text": "doc {n}"}}\n'.encode())
    stream = io.BufferedReader(raw)
    first = take(read_corpus(["-"], stdin=stream), 3)
    assert [r.id for r in records(first)] == ["d1", "d2", "d3"]
    assert raw.bytes_read < 64 * 1024


def test_streams_an_endless_csv_input() -> None:
    raw = EndlessLines(b"id,text\n", lambda n: f'r{n},"multi\nline {n}"\n'.encode())
    stream = io.BufferedReader(raw)
    first = take(read_corpus(["-"], fmt="csv", stdin=stream), 3)
    assert [(r.id, r.line) for r in records(first)] == [("r1", 2), ("r2", 4), ("r3", 6)]
    assert raw.bytes_read < 64 * 1024


def test_large_file_yields_first_record_before_reading_it_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.jsonl"
    line = json.dumps({"id": "x", "text": "word " * 200}) + "\n"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(20_000):
            fh.write(line.replace('"x"', f'"d{i}"', 1))
    size = path.stat().st_size
    assert size > 10 * 1024 * 1024

    counted: list[CountingFile] = []

    class CountingFile(io.FileIO):
        bytes_read = 0

        def readinto(self, b: Any) -> int:
            n = super().readinto(b)
            self.bytes_read += n or 0
            return n

    def counting_open(file: str, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        assert mode == "rb"
        raw = CountingFile(file, "r")
        counted.append(raw)
        return io.BufferedReader(raw)

    monkeypatch.setattr(readers, "open", counting_open, raising=False)
    iterator = read_corpus([str(path)])
    assert isinstance(iterator, Generator)
    first = next(iterator)
    assert isinstance(first, Record) and first.id == "d0"
    assert counted[-1].bytes_read < size // 100
    iterator.close()
    assert counted[-1].closed


# ------------------------------------------------------------------ what a database can store


def test_an_id_wider_than_the_id_column_is_rejected_in_every_format(tmp_path: Path) -> None:
    long_id = "x" * (readers.MAX_ID_CHARS + 1)
    jsonl = write(tmp_path / "a.jsonl", json.dumps({"id": long_id, "text": "t"}) + "\n")
    csv_file = write(tmp_path / "a.csv", f"id,text\nok,fine\n{long_id},t\n")
    got = rejected(read(jsonl, csv_file))
    reason = f"id too long ({readers.MAX_ID_CHARS + 1} characters; at most 1024)"
    assert [(r.source, r.line, r.reason) for r in got] == [
        (str(jsonl), 1, reason),
        (str(csv_file), 3, reason),
    ]
    assert readers.MAX_ID_CHARS == 1024
    exact = readers.record_from_object({"id": "y" * 1024, "text": "t"}, source="s", line=1)
    assert isinstance(exact, Record)


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"id": "a", "text": "one \u0000 two"}, "text"),
        ({"id": "a\u0000b", "text": "t"}, "id"),
        ({"id": "a", "text": "t", "title": "ti\u0000tle"}, "title"),
        ({"id": "a", "text": "t", "meta": {"k": ["v", {"deep": "\u0000"}]}}, "meta"),
        ({"id": "a", "text": "t", "meta": {"k\u0000": 1}}, "meta"),
    ],
)
def test_a_nul_character_is_rejected_naming_its_field(obj: dict[str, Any], field: str) -> None:
    item = readers.record_from_object(obj, source="request", line=7)
    assert isinstance(item, Rejected)
    assert (item.line, item.reason) == (7, f"NUL character (\\u0000) in {field}")


def test_a_nul_in_a_csv_field_or_late_in_a_text_file_is_rejected(tmp_path: Path) -> None:
    # Past the first 8 KiB, which are sniffed for binary data.
    padding = "".join(f"pad{i},{'p' * 100}\n" for i in range(90))
    csv_file = write(tmp_path / "a.csv", f"id,text\n{padding}bad,nul \0 here\n")
    text_file = write(tmp_path / "docs" / "late.txt", "x" * 10_000 + "\0")
    got = rejected(read(csv_file) + read(tmp_path / "docs"))
    assert [(r.line, r.id, r.reason) for r in got] == [
        (92, "bad", "NUL character (\\u0000) in text"),
        (1, "late.txt", "NUL character (\\u0000) in text"),
    ]
    assert text_file.exists()
