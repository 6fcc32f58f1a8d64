"""The lm-eval adapter: nlc models scored by lm-evaluation-harness, offline.

The adapter's answers are checked against the model's own log-probabilities and greedy
decoding, then a whole ``simple_evaluate`` run on a local multiple-choice task (a YAML task
and a three-line jsonl file in the test folder) must give the accuracy those log-likelihoods
imply.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

lm_eval = pytest.importorskip("lm_eval")

import nlc  # noqa: E402
from nlc.lm_eval_adapter import NLCLM  # noqa: E402
from nlc.generate import generate  # noqa: E402

TINY = Path(__file__).resolve().parents[1] / "train" / "tiny.yaml"
DOCS = [{"question": "The cat sat on the", "choices": [" mat", " sky", " zebra"], "answer": 0},
        {"question": "One, two, three,", "choices": [" four", " blue", " run"], "answer": 0},
        {"question": "To be or not to", "choices": [" be", " sea", " bee"], "answer": 1}]


def _request(*args):
    return SimpleNamespace(args=args)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder of the tiny spec trained 2 steps on real text."""
    raw = torch.tensor(list((TINY.parents[2] / "docs" / "design.md").read_bytes()), dtype=torch.uint8)
    data = SimpleNamespace(name="design-doc", train=raw[:-4096], val=raw[-4096:], vocab=256)
    out = tmp_path_factory.mktemp("lm_eval") / "run"
    nlc.train(TINY, data=data, out=out, steps=2, progress=False)
    return out


@pytest.fixture(scope="module")
def adapter(run):
    return NLCLM(pretrained=str(run))


def _own_logprob(model, context: bytes, continuation: bytes) -> tuple[float, bool]:
    tokens = torch.tensor(list(context + continuation))
    x, y = tokens[:-1][None], tokens[1:][None]
    with torch.no_grad():
        logits, _ = model(x, model.init_state(1), targets=y)
    logp = F.log_softmax(logits[0, -len(continuation):], dim=-1)
    target = y[0, -len(continuation):]
    return logp.gather(1, target[:, None]).sum().item(), bool((logp.argmax(-1) == target).all())


def test_loaded_from_the_run_in_eval_mode_with_the_spec_context(adapter):
    assert not adapter.model.training and adapter.max_length == 32 and adapter.prefix_token == ord("\n")


def test_loglikelihood_is_the_models_own_sum_of_log_probs(adapter, run):
    model = nlc.load(run)
    got = adapter.loglikelihood([_request("The cat sat on the", " mat"), _request("", "Hello")])
    expected = [_own_logprob(model, b"The cat sat on the", b" mat"), _own_logprob(model, b"\n", b"Hello")]
    for (value, greedy), (want, want_greedy) in zip(got, expected):
        assert value == pytest.approx(want, rel=1e-5) and value < 0 and greedy == want_greedy
    # a context longer than max_length keeps its last tokens
    long = "x" * 100 + "The cat sat on the"
    (value, _), = adapter.loglikelihood([_request(long, " mat")])
    cut = long.encode()[-(32 + 1 - 4):]
    assert value == pytest.approx(_own_logprob(model, cut, b" mat")[0], rel=1e-5)


def test_rolling_loglikelihood_scores_every_token_once(adapter):
    short = "to be or not"
    (rolled,) = adapter.loglikelihood_rolling([_request(short)])
    (whole, _), = adapter.loglikelihood([_request("\n", short)])  # short: one window after the prefix
    assert rolled == pytest.approx(whole, rel=1e-5)
    text = "It was the best of times, it was the worst of times, it was the age of wisdom."  # 3 windows
    (value,) = adapter.loglikelihood_rolling([_request(text)])
    pieces = [adapter.loglikelihood([_request("\n" if i == 0 else text[:i], text[i:i + 32])])[0][0]
              for i in range(0, len(text), 32)]  # the same windows: each 32 tokens after the 32 before
    assert value == pytest.approx(sum(pieces), rel=1e-5)


def test_generate_until_is_greedy_and_stops_before_the_stop_string(adapter):
    context = "The cat"
    full = generate(adapter.model, context, max_new_tokens=12, temperature=0)
    (plain,) = adapter.generate_until([_request(context, {"max_gen_toks": 12})])
    assert plain == full
    assert len(full) >= 5
    stop = full[3:5]
    (cut,) = adapter.generate_until([_request(context, {"until": [stop], "max_gen_toks": 12})])
    assert cut == full[:full.index(stop)]


def test_simple_evaluate_on_a_local_task_gives_the_accuracy_of_the_loglikelihoods(adapter, run, tmp_path):
    data = tmp_path / "tiny_mc.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in DOCS))
    (tmp_path / "tiny_mc.yaml").write_text(f"""\
task: nlc_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
""")
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(model="nlc", model_args=f"pretrained={run}", tasks=["nlc_tiny_mc"],
                                      task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
                                      num_fewshot=0,
                                      log_samples=False)
    acc = results["results"]["nlc_tiny_mc"]["acc,none"]
    right = 0
    for doc in DOCS:
        scores = [v for v, _ in adapter.loglikelihood([_request(doc["question"], c) for c in doc["choices"]])]
        right += int(max(range(len(scores)), key=scores.__getitem__) == doc["answer"])
    assert acc == pytest.approx(right / len(DOCS))
