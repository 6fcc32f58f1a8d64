"""``nlc ls``: the bundled example specs, each with the first line of its description."""
from __future__ import annotations

from pathlib import Path

import typer
import yaml

from ..spec.load import bundled_specs


def summary(path: Path, limit: int = 100) -> str:
    """The first line of the spec's ``description`` (else its first plain comment line),
    cut after its first sentence when longer than ``limit`` characters."""
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    desc = data.get("description") if isinstance(data, dict) else None
    if isinstance(desc, str) and desc.strip():
        line = desc.strip().splitlines()[0].strip()
    else:
        comments = (ln.lstrip("#").strip() for ln in text.splitlines() if ln.startswith("#"))
        line = next((c for c in comments if c and "$schema=" not in c
                     and not c.lower().startswith(("run:", "nlc "))), "")
    if len(line) > limit:
        cut = line.find(". ")
        line = line[: cut + 1] if 0 < cut < limit else line[: limit - 3].rstrip() + "..."
    return line


def ls() -> None:
    """List the bundled example specs: every verb takes these names in place of a file.

    Examples:

    \b
      nlc ls
      nlc validate search/hope_cms && nlc show hope
      nlc cp ablations/hope_no_cms my_ablation.yaml
    """
    specs = bundled_specs()
    if not specs:
        typer.echo("no bundled specs found", err=True)
        return
    width = max(map(len, specs))
    for name, path in specs.items():
        typer.echo(f"{name:<{width}}  {summary(path)}".rstrip())
