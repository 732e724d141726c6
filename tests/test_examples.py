"""Smoke tests of examples/: every script's --quick mode runs, prints its RESULT line(s) and writes its plots.

The examples are imported and their main(argv) called in-process (no interpreter start-up per script). They only
check that the examples work end to end on tiny sizes; the metrics of the full runs are in examples/README.md.
"""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import pytest
import torch

import fusedrnn

pytest.importorskip("sklearn", reason="the examples need the `examples` extra: pip install -e .[examples]")
pytest.importorskip("statsmodels", reason="the examples need the `examples` extra: pip install -e .[examples]")
pytest.importorskip("matplotlib", reason="the examples need the `examples` extra: pip install -e .[examples]")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RESULT = re.compile(r"^RESULT (.+): (.+) = (\S+) \(baseline (\S+)\) backend=(\S+) time=", re.MULTILINE)

# script -> (extra --quick arguments, RESULT lines expected, plots expected)
CASES = {
    # --clip adds the unclipped comparison run (one more RESULT line) and its plot.
    "long_term_dependency": (
        ["--clip", "1", "--rnn-gain", "2", "--optimizer", "sgd"],
        2 * 3 + 1,
        ["adding_learning_curves", "adding_hidden_grad_norms", "adding_clipping"],
    ),
    "sequence_classification": ([], 3, ["digits_learning_curve"]),
    "seq2seq_dates": ([], 1, ["dates_learning_curve"]),
    "synced_and_one_to_many": ([], 2, ["synced_and_one_to_many_learning_curves"]),
    "forecasting": ([], 2, ["sunspots_forecast"]),
    # One seed of each of the three models (LSTM, LN-LSTM, LSTM+zoneout).
    "char_lm_variants": ([], 3, ["char_lm_learning_curves"]),
    # Three models (LSTM, sLSTM, sLSTM without memory mixing) at the training length and 4x it.
    "state_tracking": ([], 6, ["state_tracking_learning_curves"]),
}


@pytest.fixture
def example(monkeypatch):
    """Imports an example by name with examples/ on sys.path; restores torch's thread count afterwards."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    threads = torch.get_num_threads()
    yield importlib.import_module
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_quick_run(name, example, tmp_path, capsys):
    extra, results, plots = CASES[name]
    metrics = example(name).main(["--quick", "--plots", str(tmp_path), *extra])
    out = capsys.readouterr().out
    lines = RESULT.findall(out)
    assert len(lines) == results, out
    for task, metric, value, baseline, backend in lines:
        assert math.isfinite(float(value)) and math.isfinite(float(baseline)), (task, metric)
        assert backend in fusedrnn.available_backends(), backend
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted(plots)


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_help(name, example, capsys):
    with pytest.raises(SystemExit) as exit:
        example(name).main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--backend", "--quick", "--plots"):
        assert flag in out


def test_named_backend_is_used(example, capsys):
    """--backend reaches the layers: the reference backend is reported (and runs) when asked for."""
    example("sequence_classification").main(["--quick", "--backend", "reference"])
    assert "backend=reference" in capsys.readouterr().out
