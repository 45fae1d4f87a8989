"""JSON log lines carry the request id of the request being served."""

from __future__ import annotations

import json
import logging

from app.logs import JsonFormatter, configure_logging, request_id_var


def record(message: str, **extra: object) -> logging.LogRecord:
    item = logging.makeLogRecord({"name": "app.test", "levelname": "INFO", "msg": message, "args": ()})
    item.__dict__.update(extra)
    return item


def test_a_line_is_one_json_object_with_the_request_id_of_the_context() -> None:
    token = request_id_var.set("req-1")
    try:
        line = JsonFormatter().format(record("model %s loaded", route="/v1/classify"))
    finally:
        request_id_var.reset(token)
    payload = json.loads(line)
    assert payload["request_id"] == "req-1"
    assert payload["route"] == "/v1/classify"
    assert payload["level"] == "INFO" and payload["logger"] == "app.test"
    assert "\n" not in line


def test_without_a_request_there_is_no_request_id() -> None:
    assert "request_id" not in json.loads(JsonFormatter().format(record("started")))


def test_exceptions_stay_inside_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        item = record("failed")
        item.exc_info = sys.exc_info()
    payload = json.loads(JsonFormatter().format(item))
    assert "ValueError: boom" in payload["exception"]


def test_configure_logging_sends_json_lines_to_stdout(capsys) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("info")
        logging.getLogger("uvicorn.error").info("Started server process")
    finally:
        root.handlers, root.level = handlers, level
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["message"] == "Started server process" and payload["logger"] == "uvicorn.error"
