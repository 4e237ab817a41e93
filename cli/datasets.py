"""`chainyard dataset put|append|show` against a chainyard API (design section 6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from cli.console import EXIT_BAD_SPEC, err
from cli.remote import DEFAULT_URL, Token, Url, api_call, client

app = typer.Typer(no_args_is_help=True, help="Datasets: declare columns, append rows (new versions), show.")


@app.command("put")
def put(name: str,
        columns: Annotated[str, typer.Option(help="name:type,... with types float, int, string (or category), "
                                                  "e.g. hospital:string,n:int,y:float.")],
        description: Annotated[str | None, typer.Option(help="What the rows are.")] = None,
        url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Declare a dataset's columns (again with the same columns: nothing changes)."""
    schema = parse_columns(columns)
    with client(url, token) as api:
        found = api_call(lambda: api.put_dataset(name, schema, description=description))
    typer.echo(f"dataset {found['name']} version {found['version']}, {found['rows']} rows")


@app.command("append")
def append(name: str,
           file: Annotated[Path, typer.Argument(help=".csv with a header line, or .json: {columns: {column: "
                                                     "[values]}}, {rows: [{column: value}]} or a list of rows.")],
           url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Append a file's rows as one new version (all of them or, naming every bad row, none)."""
    if not file.is_file():
        _bad(f"{file}: no such file")
    if file.suffix.lower() == ".csv":
        kwargs: dict[str, Any] = {"csv": file.read_text(encoding="utf-8-sig")}
    elif file.suffix.lower() == ".json":
        kwargs = _json_rows(file)
    else:
        _bad(f"{file}: expected a .csv or .json file")
    with client(url, token) as api:
        version = api_call(lambda: api.append_rows(name, **kwargs))
    typer.echo(f"dataset {name} version {version['number']}: {version['added']} rows added, {version['rows']} in all "
               f"(hash {version['hash'][:12]})")


@app.command("show")
def show(name: str, url: Url = DEFAULT_URL, token: Token = None,
         versions: Annotated[bool, typer.Option(help="Every version, not only the last few.")] = False) -> None:
    """The dataset's columns, rows, latest version and hash, and its last versions (JSON)."""
    with client(url, token) as api:
        found = api_call(lambda: api.dataset(name))
        if versions:
            found["versions"] = api_call(lambda: api.dataset_versions(name))
    typer.echo(json.dumps(found, indent=1))


def parse_columns(text: str) -> dict[str, str]:
    """'hospital:string,n:int' -> {"hospital": "string", "n": "int"} (the service checks names and types)."""
    schema: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        column, sep, kind = item.partition(":")
        if not sep or not column.strip() or not kind.strip():
            _bad(f"--columns: {item!r} is not name:type")
        schema[column.strip()] = kind.strip()
    if not schema:
        _bad("--columns: no columns")
    return schema


def _json_rows(file: Path) -> dict[str, Any]:
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        _bad(f"{file}: not JSON: {exc}")
    if isinstance(doc, list):
        return {"rows": doc}
    if isinstance(doc, dict) and list(doc) in (["rows"], ["columns"]):
        return dict(doc)
    _bad(f"{file}: expected {{\"columns\": {{...}}}}, {{\"rows\": [...]}} or a list of rows")


def _bad(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    raise typer.Exit(EXIT_BAD_SPEC)
