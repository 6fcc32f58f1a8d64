"""``nlc schema [-o FILE]``: the JSON Schema of specs, for editors (yaml-language-server)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ..spec import Spec

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
TITLE = "nlc spec"


def _accept_extends(schema: dict[str, Any]) -> None:
    """Spec *files* may ``extends`` a base (the loader merges and removes the key before
    validation): accept the key and a null level (removes the base's level); require ``nlc``, ``levels`` and ``model`` only of a file
    that extends nothing, and ``model.blocks`` of none (a base such as base/small.yaml
    leaves the blocks to the specs extending it; ``nlc validate`` still requires them)."""
    schema["properties"] = {
        "extends": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                    "description": "base spec(s) to deep-merge under this one: a path relative to "
                                   "this file or a bundled spec name (maps merge, lists replace)"},
        **schema["properties"],
    }
    levels = schema["properties"]["levels"]
    levels["additionalProperties"] = {"anyOf": [levels["additionalProperties"], {
        "type": "null", "description": "in a file that extends another: remove this level of the base"}]}
    schema["if"] = {"required": ["extends"]}
    schema["else"] = {"required": schema.pop("required", [])}
    schema["$defs"]["ModelSpec"].pop("required", None)


def build_schema() -> dict[str, Any]:
    """``Spec.model_json_schema()`` with ``$schema`` and ``title`` set, as seen by an editor
    on a spec *file*: a layer may be a bare level name, and a file may ``extends`` a base."""
    body = Spec.model_json_schema()
    _accept_extends(body)
    body.pop("title", None)
    return {"$schema": SCHEMA_DIALECT, "title": TITLE, **body}


def schema_text() -> str:
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"


# The end of `nlc schema --help` (app.py passes it as the epilog): commands that run as written.
EPILOG = ("Examples:\n"
          "  nlc schema\n"
          "  nlc schema -o nlc.schema.json")


def schema(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write to FILE, not stdout"),
) -> None:
    """Print the JSON Schema of the spec language (docs/nlc.schema.json is this output)."""
    text = schema_text()
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}", err=True)
