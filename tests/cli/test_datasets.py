"""`chainyard dataset put|append|show` against a real API (Redis and uvicorn; no workers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import create_app
from cli.console import EXIT_BAD_SPEC
from cli.datasets import parse_columns
from cli.stack import Stack
from tests.service.conftest import TOKENS, make_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, compile_cache: Path) -> Iterator[Stack]:
    s = make_stack(tmp_path_factory.mktemp("datasets-cli"), compile_cache, workers=0)
    s.start()
    yield s
    s.stop()


def chainyard(stack: Stack, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(create_app(), [*args, "--url", stack.url, "--token", TOKENS["alice"]])
    return result.exit_code, result.output


def test_put_append_csv_and_json_then_show(stack: Stack, tmp_path: Path) -> None:
    code, out = chainyard(stack, "dataset", "put", "hospitals", "--columns", "hospital:string, n:int,y:float")
    assert code == 0 and "dataset hospitals version 0, 0 rows" in out, out
    cohort = tmp_path / "cohort1.csv"
    cohort.write_text("hospital,n,y\nA,10,0.5\nB,12,0.25\n")
    code, out = chainyard(stack, "dataset", "append", "hospitals", str(cohort))
    assert code == 0 and "version 1: 2 rows added, 2 in all" in out, out
    records = tmp_path / "cohort2.json"
    records.write_text(json.dumps([{"hospital": "C", "n": 7, "y": 1.5}]))
    columns = tmp_path / "cohort3.json"
    columns.write_text(json.dumps({"columns": {"hospital": ["D"], "n": [3], "y": [2.0]}}))
    for file, version in ((records, 2), (columns, 3)):
        code, out = chainyard(stack, "dataset", "append", "hospitals", str(file))
        assert code == 0 and f"version {version}:" in out, out
    code, out = chainyard(stack, "dataset", "show", "hospitals", "--versions")
    shown = json.loads(out)
    assert code == 0 and shown["rows"] == 4 and shown["version"] == 3
    assert [v["number"] for v in shown["versions"]] == [0, 1, 2, 3]


def test_bad_input_exits_2_naming_the_problem(stack: Stack, tmp_path: Path) -> None:
    chainyard(stack, "dataset", "put", "bad", "--columns", "hospital:string,n:int,y:float")
    bad = tmp_path / "bad.csv"
    bad.write_text("hospital,n,y\nA,1,1.0\nB,2.5,x\n")
    code, out = chainyard(stack, "dataset", "append", "bad", str(bad))
    assert code == EXIT_BAD_SPEC and "rows[1].n: not an integer" in out and "rows[1].y: not a number" in out
    code, out = chainyard(stack, "dataset", "append", "bad", str(tmp_path / "rows.txt"))
    assert code == EXIT_BAD_SPEC and "no such file" in out
    code, out = chainyard(stack, "dataset", "put", "bad2", "--columns", "hospital,n:int")
    assert code == EXIT_BAD_SPEC and "not name:type" in out
    code, out = chainyard(stack, "dataset", "put", "bad2", "--columns", "age:number")
    assert code == EXIT_BAD_SPEC and "columns.age" in out


def test_parse_columns_keeps_the_order() -> None:
    assert list(parse_columns("y:float, hospital:category,n:int")) == ["y", "hospital", "n"]
