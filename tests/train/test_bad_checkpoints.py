"""A damaged or hostile checkpoint is refused with one line naming the file and the problem,
and exit status 2 (nlc.status.BAD_INPUT), by ``nlc eval``, ``nlc generate`` and
``nlc train --resume``: never a traceback, never silently started afresh.

One real checkpoint is trained once per module (tests/train/tiny.yaml, 2 steps, through the
CLI so that ``--resume`` with the same arguments matches its spec); each case corrupts a
copy of it."""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path
from typing import Callable

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from nlc.cli.app import app
from nlc.status import BAD_INPUT
from nlc.training import CheckpointError, load_checkpoint

TINY = str(Path(__file__).parent / "tiny.yaml")
TRAIN = ["train", TINY, "--steps", "2", "--sample-tokens", "0", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained")
    result = CliRunner().invoke(app, [*TRAIN, "--out", str(run)])
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


# -- corruptions: each changes the checkpoint folder C and returns the expected message ----
def _rewrite_meta(c: Path, change: Callable[[dict], None], rehash: bool = True) -> Path:
    meta = json.loads((c / "meta.json").read_text())
    change(meta)
    if rehash and "spec_yaml" in meta:  # as an attacker would: the sha256 matches the new text
        meta["spec_sha256"] = hashlib.sha256(meta["spec_yaml"].encode()).hexdigest()
    (c / "meta.json").write_text(json.dumps(meta))
    return c / "meta.json"


def _rewrite_tensors(file: Path, change: Callable[[dict], None]) -> None:
    tensors = load_file(file)
    change(tensors)
    save_file(tensors, file, metadata={"format": "pt"})


def empty_model(c: Path) -> str:
    (c / "model.safetensors").write_bytes(b"")
    return f"{c / 'model.safetensors'}: empty (0 bytes)"


def truncated_header(c: Path) -> str:
    data = (c / "model.safetensors").read_bytes()
    (c / "model.safetensors").write_bytes(data[:100])
    length = struct.unpack("<Q", data[:8])[0]
    return f"{c / 'model.safetensors'}: truncated (safetensors header says {length:,} bytes, file has 100)"


def truncated_data(c: Path) -> str:
    data = (c / "model.safetensors").read_bytes()
    (c / "model.safetensors").write_bytes(data[:-10])
    return f"{c / 'model.safetensors'}: truncated (its tensors end at byte {len(data):,}, file has {len(data) - 10:,})"


def wrong_shape(c: Path) -> str:
    _rewrite_tensors(c / "model.safetensors", lambda t: t.update({"embed.weight": t["embed.weight"][:, :31].contiguous()}))
    return (f"{c / 'model.safetensors'}: tensor 'embed.weight' has shape [256, 31], the model built from the "
            "spec needs [256, 32]")


def wrong_dtype(c: Path) -> str:
    _rewrite_tensors(c / "model.safetensors", lambda t: t.update({"embed.weight": t["embed.weight"].double()}))
    return f"{c / 'model.safetensors'}: tensor 'embed.weight' is float64, the model needs float32"


def missing_tensor(c: Path) -> str:
    _rewrite_tensors(c / "model.safetensors", lambda t: t.pop("embed.weight"))
    return f"{c / 'model.safetensors'}: lacks 'embed.weight' of the model built from the spec"


def extra_tensor(c: Path) -> str:
    _rewrite_tensors(c / "model.safetensors", lambda t: t.update({"sneaky.weight": t["embed.weight"].clone()}))
    return f"{c / 'model.safetensors'}: holds 'sneaky.weight', which the model built from the spec does not have"


def missing_meta(c: Path) -> str:
    (c / "meta.json").unlink()
    return (f"{c / 'meta.json'}: missing (an incomplete checkpoint: nlc writes meta.json, model.safetensors, "
            "optimizer.safetensors together)")


def meta_not_json(c: Path) -> str:
    (c / "meta.json").write_text('{"format": 1, "st')
    return f"{c / 'meta.json'}: not JSON (Unterminated string starting at: line 1, column 15)"


def meta_not_an_object(c: Path) -> str:
    (c / "meta.json").write_text("[1, 2]")
    return f"{c / 'meta.json'}: holds a JSON list, not an object"


def meta_wrong_type(c: Path) -> str:
    _rewrite_meta(c, lambda m: m.update(step="2"))
    return f"{c / 'meta.json'}: 'step' is \"2\", not an integer"


def meta_without_spec(c: Path) -> str:
    _rewrite_meta(c, lambda m: m.pop("spec_yaml"))
    return f"{c / 'meta.json'}: has no 'spec_yaml' entry (not a checkpoint written by nlc train)"


def spec_edited(c: Path) -> str:
    meta = _rewrite_meta(c, lambda m: m.update(spec_yaml=m["spec_yaml"].replace("width: 32", "width: 64")),
                         rehash=False)
    stored = json.loads(meta.read_text())
    actual = hashlib.sha256(stored["spec_yaml"].encode()).hexdigest()
    return (f"{meta}: 'spec_yaml' hashes to {actual}, not the recorded spec_sha256 {stored['spec_sha256']} "
            "(the file was edited)")


def spec_not_yaml(c: Path) -> str:
    meta = _rewrite_meta(c, lambda m: m.update(spec_yaml="nlc: 1\nlevels: {a: [\n"))
    return f"the stored spec does not validate: {meta} spec_yaml:3:1: <root>: YAML syntax:"


def spec_invalid(c: Path) -> str:
    meta = _rewrite_meta(c, lambda m: m.update(spec_yaml=m["spec_yaml"].replace("width: 32", "width: -3")))
    text = json.loads(meta.read_text())["spec_yaml"]
    line = text[:text.index("width: -3")].count("\n") + 1
    return f"the stored spec does not validate: {meta} spec_yaml:{line}:"


def spec_names_a_file(c: Path) -> str:
    """The stored spec is text, never a file name: a path to a valid spec is just a string."""
    meta = _rewrite_meta(c, lambda m: m.update(spec_yaml=TINY))
    return (f"the stored spec does not validate: {meta} spec_yaml:1:1: <root>: a spec is a mapping of keys "
            "(nlc, levels, model, ...)")


def rng_state_invalid(c: Path) -> str:
    """The right length, but content mt19937 refuses (it used to reach torch as a traceback)."""
    meta = _rewrite_meta(c, lambda m: m["rng"].update(torch="00" * (len(m["rng"]["torch"]) // 2)))
    return f"{meta}: 'rng' holds no valid CPU generator state (Invalid mt19937 state)"


def folder_is_a_file(c: Path) -> str:
    shutil.rmtree(c)
    c.write_text("not a folder")
    return (f"{c}: is a file, not a checkpoint folder (give the folder that holds meta.json, "
            "model.safetensors, optimizer.safetensors, or its run folder)")


CASES = [empty_model, truncated_header, truncated_data, wrong_shape, wrong_dtype, missing_tensor, extra_tensor,
         missing_meta, meta_not_json, meta_not_an_object, meta_wrong_type, meta_without_spec, spec_edited,
         spec_not_yaml, spec_invalid, spec_names_a_file, rng_state_invalid]


def _one_line_error(result) -> str:
    assert result.exit_code == BAD_INPUT, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0][len("error: "):]


def _matches(message: str, expected: str) -> bool:
    return message == expected or (expected.endswith(":") and message.startswith(expected))


@pytest.mark.parametrize("corrupt", [*CASES, folder_is_a_file], ids=lambda f: f.__name__)
def test_load_checkpoint_names_the_file_and_the_problem(run, corrupt):
    expected = corrupt(run / "checkpoint")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(run / "checkpoint")
    assert _matches(str(err.value), expected), str(err.value)


@pytest.mark.parametrize("corrupt", [*CASES, folder_is_a_file], ids=lambda f: f.__name__)
@pytest.mark.parametrize("verb", [["eval", "{c}", "--task", "copy", "--lengths", "16", "--n", "1"],
                                  ["generate", "{c}", "--prompt", "x", "-n", "2"]], ids=["eval", "generate"])
def test_eval_and_generate_exit_2_with_one_line(run, corrupt, verb):
    expected = corrupt(run / "checkpoint")
    result = CliRunner().invoke(app, [a.format(c=run / "checkpoint") for a in verb])
    assert _matches(_one_line_error(result), expected)


def _resume(run: Path):
    return CliRunner().invoke(app, [*TRAIN, "--out", str(run), "--resume"])


def optimizer_truncated(c: Path) -> str:
    data = (c / "optimizer.safetensors").read_bytes()
    (c / "optimizer.safetensors").write_bytes(data[:-4])
    return (f"{c / 'optimizer.safetensors'}: truncated (its tensors end at byte {len(data):,}, "
            f"file has {len(data) - 4:,})")


@pytest.mark.parametrize("corrupt", [*CASES, optimizer_truncated], ids=lambda f: f.__name__)
def test_train_resume_exits_2_and_leaves_the_checkpoint(run, corrupt):
    # a stored spec that differs from the given one is parsed (to compare all but the budget), so a
    # corrupt one is named like any other corruption
    expected = corrupt(run / "checkpoint")
    before = {f.name: f.read_bytes() for f in (run / "checkpoint").iterdir()}
    result = _resume(run)
    assert _matches(_one_line_error(result), expected)
    assert {f.name: f.read_bytes() for f in (run / "checkpoint").iterdir()} == before  # nothing overwritten


def test_a_run_folder_is_accepted_where_a_checkpoint_is_expected(trained):
    model, meta = load_checkpoint(trained)
    assert meta["step"] == 2 and meta.file == trained / "checkpoint" / "meta.json"
    assert model.spec.name == "tiny"
