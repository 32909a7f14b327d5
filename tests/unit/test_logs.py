"""Log set-up: JSON lines with delivery context, text with key=value, URLs without secrets."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookstage.logs import configure, safe_url


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = logging.getLogger("aiosqlite").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("aiosqlite").setLevel(quiet)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_delivery_context_in_their_own_keys() -> None:
    stream = io.StringIO()
    configure("json", "debug", stream=stream)
    context = {"delivery_id": "dlv_1", "stage_id": "hook", "task_id": "t1", "status": 500}
    logging.getLogger("hookstage.test").info("attempt %s failed", 1, extra=context)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("hookstage.test").exception("it broke")
    first, second = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "attempt 1 failed"
    assert (first["level"], first["logger"]) == ("info", "hookstage.test")
    assert {k: first[k] for k in context} == context
    assert first["time"].endswith("Z")
    assert "RuntimeError: boom" in second["exception"]


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_append_the_context_and_the_level_filters() -> None:
    stream = io.StringIO()
    configure("text", "warning", stream=stream)
    log = logging.getLogger("hookstage.test")
    log.info("not shown", extra={"delivery_id": "dlv_0"})
    log.warning("given up", extra={"delivery_id": "dlv_2", "stage_id": "hook"})
    [line] = stream.getvalue().splitlines()
    assert line.endswith("hookstage.test: given up delivery_id=dlv_2 stage_id=hook")


@pytest.mark.usefixtures("restore_logging")
def test_configuring_again_replaces_the_handler_and_drivers_stay_at_warning() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure("text", "debug", stream=first)
    configure("json", "debug", stream=second)
    logging.getLogger("hookstage.test").info("once")
    logging.getLogger("aiosqlite").debug("executing INSERT ... ('the secret',)")
    assert first.getvalue() == ""
    assert [orjson.loads(line)["message"] for line in second.getvalue().splitlines()] == ["once"]


@pytest.mark.parametrize(
    ("args", "field"), [(("xml", "info"), "format"), (("json", "loud"), "level")]
)
def test_a_bad_setting_names_it(args: tuple[str, str], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        configure(*args)


@given(
    user=st.text(alphabet="abcXYZ019", min_size=1, max_size=8),
    password=st.text(alphabet="pqrPQR789", min_size=1, max_size=8),
    token=st.text(alphabet="tuvTUV456", min_size=1, max_size=8),
    port=st.integers(1, 65535),
)
def test_safe_url_keeps_where_and_drops_credentials_query_and_fragment(
    user: str, password: str, token: str, port: int
) -> None:
    password, token = f"PW-{password}", f"TK-{token}"
    url = f"https://{user}:{password}@hooks.example.com:{port}/in?token={token}#{token}"
    shown = safe_url(url)
    assert shown == f"https://hooks.example.com:{port}/in"
    assert password not in shown
    assert token not in shown


def test_safe_url_of_an_ipv6_literal_and_of_garbage() -> None:
    assert safe_url("http://[::1]:8080/hook?k=v") == "http://[::1]:8080/hook"
    assert safe_url("http://[::1/hook") == "(unreadable URL)"
