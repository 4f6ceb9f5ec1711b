"""embedq.tasks.logs: JSON lines with the job, batch and collection in hand; text by default."""

from __future__ import annotations

import io
import json
import logging
import threading

from embedq.tasks.logs import ContextFilter, JsonFormatter, log_context, logging_config


def _capture(fmt: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(ContextFilter())
    handler.setFormatter(fmt)
    logger = logging.getLogger(f"embedq.test.{id(out)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, out


def test_json_lines_carry_the_context_and_extras() -> None:
    logger, out = _capture(JsonFormatter())
    logger.info("outside")
    with log_context(job_id="j1", collection="papers"), log_context(batch_id=7):
        logger.info("batch %s done", 7, extra={"documents": 4})
    logger.info("after")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["outside", "batch 7 done", "after"]
    assert "job_id" not in lines[0] and "job_id" not in lines[2]
    inner = lines[1]
    assert (inner["job_id"], inner["batch_id"], inner["collection"]) == ("j1", 7, "papers")
    assert inner["documents"] == 4 and inner["level"] == "INFO" and inner["time"].endswith("+00:00")


def test_exceptions_are_one_json_line() -> None:
    logger, out = _capture(JsonFormatter())
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        logger.exception("failed")
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert "ValueError: bad\nthing" in record["exc_info"]


def test_threads_keep_their_own_context() -> None:
    logger, out = _capture(JsonFormatter())

    def work(n: int) -> None:
        with log_context(batch_id=n):
            logger.info("in %s", n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted((r["message"], r["batch_id"]) for r in records) == [
        (f"in {n}", n) for n in range(4)
    ]


def test_text_is_the_default_and_names_the_context() -> None:
    config = logging_config("text")
    assert config["handlers"]["stderr"]["formatter"] == "text"
    assert logging_config("json")["handlers"]["stderr"]["formatter"] == "json"
    fmt = logging.Formatter(config["formatters"]["text"]["format"])
    logger, out = _capture(fmt)
    with log_context(job_id="j2"):
        logger.warning("slow")
    assert out.getvalue().rstrip().endswith("WARNING " + logger.name + ": slow job_id=j2")
