"""What people do with torch.nn's RNNs besides forward and backward, on torch.nn and on fusedrnn side by side (issue 13):
zero sizes, double backward, torch.func transforms, whole-model torch.save/torch.load and torch.jit.script; and
(issue 24) inter-layer dropout on packed sequences, drawn from torch's RNG exactly as torch.nn draws it.

Every scenario runs with `auto` and with each backend that runs CPU tensors here forced (triton under its interpreter,
in float32; the others in float64), and asserts the outcome torch.nn has.
"""

from __future__ import annotations

import functools
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vjp
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
import zero_size_cases
from cpu_backends import backend_params
from devices import CUDA, DEVICE, NEEDS_CUDA_REASON, needs_cuda
from fusedrnn import reference, registry
from fusedrnn.kernels.plan import KERNEL_ENV
from parity import TOLERANCES, assert_all_close, forward_backward, leaf, twin

TESTS = Path(__file__).resolve().parent
#: The zero-size child runs ~50 tiny cases; Triton's interpreter and a loaded machine make it slow, never this slow.
CHILD_TIMEOUT_S = 600

#: (id, fusedrnn class, torch.nn class, extra constructor arguments)
LAYERS = [
    ("lstm", fusedrnn.LSTM, nn.LSTM, {}),
    ("gru", fusedrnn.GRU, nn.GRU, {}),
    ("rnn_tanh", fusedrnn.RNN, nn.RNN, {"nonlinearity": "tanh"}),
]
CELLS = [
    ("lstm_cell", fusedrnn.LSTMCell, nn.LSTMCell, {}),
    ("gru_cell", fusedrnn.GRUCell, nn.GRUCell, {}),
    ("rnn_cell", fusedrnn.RNNCell, nn.RNNCell, {"nonlinearity": "tanh"}),
]
INPUT_SIZE, HIDDEN_SIZE, SEQ_LEN, BATCH = 3, 4, 3, 2


def twins(kind: tuple, backend: str, dtype: torch.dtype) -> tuple[nn.Module, nn.Module]:
    """(torch.nn module, fusedrnn module) with the same weights, in `dtype`."""
    name, fused_cls, torch_cls, extra = kind
    torch.manual_seed(0)
    expected = torch_cls(INPUT_SIZE, HIDDEN_SIZE, dtype=dtype, **extra)
    actual = fused_cls(INPUT_SIZE, HIDDEN_SIZE, dtype=dtype, backend=backend, **extra)
    actual.load_state_dict(expected.state_dict())
    return expected, actual


def example_input(kind: tuple, dtype: torch.dtype) -> torch.Tensor:
    shape = (BATCH, INPUT_SIZE) if kind in CELLS else (SEQ_LEN, BATCH, INPUT_SIZE)
    return torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)


def first_output(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The module's main output: y of a layer, h' of a cell (LSTMCell: h')."""
    out = module(x)
    return out[0] if isinstance(out, tuple) else out


def assert_same(actual, expected, dtype: torch.dtype) -> None:
    torch.testing.assert_close(actual, expected, **TOLERANCES[dtype])


# ---------------------------------------------------------------------------------------------------------------
# 1. Zero sizes, in a child process: a crash (SIGFPE, SIGSEGV) fails these tests instead of killing pytest.


class Skip(str):
    """A configuration the forced backend refuses at every size (e.g. triton with proj_size), with its reason."""


@functools.cache
def zero_size_problems(
    backend: str, dtype: torch.dtype, triton_kernel: str | None = None, device: str = "cpu"
) -> dict[str, str | None]:
    """case id -> None (same outcome as torch.nn) or what differs, from one child process per backend (and
    FUSEDRNN_TRITON_KERNEL=`triton_kernel` if given) on `device`."""
    env = None if triton_kernel is None else {**os.environ, KERNEL_ENV: triton_kernel}
    child = subprocess.run(
        [sys.executable, str(TESTS / "zero_size_cases.py"), backend, str(dtype).removeprefix("torch."), device],
        cwd=TESTS, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, env=env,
    )  # fmt: skip
    lines = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    problems = {line["case"]: line["problem"] for line in lines}
    problems.update({line["case"]: Skip(line["unsupported"]) for line in lines if line.get("unsupported")})
    if child.returncode != 0:
        died = (
            f"killed by {signal.Signals(-child.returncode).name}"
            if child.returncode < 0
            else f"exit status {child.returncode}"
        )
        last = lines[-1]["case"] if lines else "none"
        crash = f"the child process died ({died}) after case {last}; stderr: {child.stderr[-2000:]}"
        problems.update({case: crash for case in zero_size_cases.CASES if case not in problems})
    return problems


@pytest.mark.parametrize("case", list(zero_size_cases.CASES))
@pytest.mark.parametrize("backend,dtype", backend_params())
def test_zero_sizes_match_torch_nn(backend, dtype, case):
    """Empty outputs and working gradients, or torch.nn's exception type: hidden_size=0 cells, input_size=0, batch 0,
    and T=0 / H=0 / I=0 layers (which torch.nn refuses)."""
    problem = zero_size_problems(backend, dtype)[case]
    if isinstance(problem, Skip):
        pytest.skip(f"backend {backend!r} does not serve this configuration at any size: {problem}")
    assert problem is None


#: The planner's reason for refusing a hidden-size-0 call (fusedrnn.kernels.plan), which every such cell reaches.
HIDDEN_0_REFUSAL = "hidden size 0"


def persistent_refusal(case: str) -> str | None:
    """Why the forced persistent Triton kernels refuse a zero-size case if it reaches them (fusedrnn.kernels.plan).
    Layers with hidden size 0 never do: their constructor raises, as torch.nn's does."""
    name, sizes = zero_size_cases.CASES[case]
    if sizes.hidden_size == 0 and name in zero_size_cases.CELL_CLASSES:
        return HIDDEN_0_REFUSAL
    return "LSTM projection" if "proj_size" in zero_size_cases.CLASSES[name][2] else None


@pytest.mark.parametrize("case", list(zero_size_cases.CASES))
@pytest.mark.parametrize("backend,dtype", [p for p in backend_params() if p.id == "triton"])
def test_zero_sizes_on_forced_persistent_triton_kernels(backend, dtype, case):
    """The same cases on the persistent kernels (one launch per step under the interpreter): batch 0 runs them;
    hidden size 0 (no W_hh slice to hold) is refused with the planner's reason, as is the projection wherever a
    launch would happen (a T = 0 layer ends before any)."""
    problem = zero_size_problems(backend, dtype, "persistent")[case]
    refusal = persistent_refusal(case)
    if isinstance(problem, Skip) or refusal == HIDDEN_0_REFUSAL:
        assert isinstance(problem, Skip) and refusal is not None and refusal in problem, problem
    else:
        assert problem is None


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", list(zero_size_cases.CASES))
def test_zero_sizes_on_cuda_match_torch_nn(case, dtype):
    """The zero-size cases on the `cuda` backend with CUDA tensors, against torch.nn (cuDNN) there: a hidden-size-0
    cell reaches the fused kernels' planner, whose tilings divide by the sizes (once a SIGFPE that killed the
    process: the child process keeps a crash a test failure)."""
    problem = zero_size_problems("cuda", dtype, device="cuda")[case]
    assert not isinstance(problem, Skip), problem
    assert problem is None


# ---------------------------------------------------------------------------------------------------------------
# 2. Higher-order gradients


@pytest.mark.parametrize("kind", LAYERS + CELLS, ids=[k[0] for k in LAYERS + CELLS])
@pytest.mark.parametrize("backend,dtype", backend_params())
def test_gradient_penalty_matches_torch_nn(backend, dtype, kind):
    """A WGAN-GP-style penalty: the gradient of |d output / d x|^2 with respect to every parameter and to x.

    What this checks for the compiled backends (cpu, cuda, triton): their forward and the wiring of their ops'
    differentiable backward. Under create_graph=True that backward is fusedrnn.reference.layer_vjp
    (fusedrnn/autograd_paths.py), never the kernels' own backward, so this passes for any kernel backward: that one is
    tested against torch.nn in the parity grids, and its equality with this path in
    test_create_graph_first_order_gradients_equal_the_kernel_backward."""
    results = []
    for module in twins(kind, backend, dtype):
        x = leaf(example_input(kind, dtype))
        y = first_output(module, x)
        upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
        (dx,) = torch.autograd.grad(y, x, upstream, create_graph=True)
        penalty = dx.square().sum()
        results.append(torch.autograd.grad(penalty, [x, *module.parameters()]))
    for expected, actual in zip(*results):
        assert_same(actual, expected, dtype)


@pytest.mark.parametrize("kind", LAYERS + CELLS, ids=[k[0] for k in LAYERS + CELLS])
@pytest.mark.parametrize("backend,dtype", [p for p in backend_params() if p.values[1] == torch.float64])
def test_gradgradcheck_float64(backend, dtype, kind):
    """gradgradcheck of the output with respect to the input and the initial state, as torch.nn passes it.
    (The Triton kernels run float32 only on CPU, too coarse for gradgradcheck: see the gradient penalty test.)

    For the compiled backends the second order is fusedrnn.reference.layer_vjp's (see the gradient penalty test); the
    first-order gradcheck inside gradgradcheck runs under create_graph too, so the kernels' backward is not what this
    checks."""
    state_shape = (BATCH, HIDDEN_SIZE) if kind in CELLS else (1, BATCH, HIDDEN_SIZE)
    for module in twins(kind, backend, dtype):
        x = leaf(example_input(kind, torch.float64))
        h = leaf(torch.randn(state_shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64))

        def outputs(x, h, module=module):
            hx = (h, torch.zeros_like(h)) if kind[0].startswith("lstm") else h
            out = module(x, hx)
            return out[0] if isinstance(out, tuple) else out

        assert torch.autograd.gradgradcheck(outputs, (x, h))


#: The backends whose ops have a kernel backward of their own (fusedrnn/autograd_paths.py): (name, dtype, device,
#: marks); cuda only on a GPU (the `gpu` marker selects it, and triton, for the GPU run).
KERNEL_BACKWARD_BACKENDS = [
    ("cpu", torch.float64, "cpu", []),
    ("triton", torch.float32, DEVICE, [pytest.mark.gpu]),
    ("cuda", torch.float64, "cuda", [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason=NEEDS_CUDA_REASON)]),
]
#: A layer of each compiled op family: the three cells, the LSTM projection, a variant (layer norm and zoneout masks,
#: eval so that the masks are the rate: no random draw to repeat; `cuda` has no variant kernels).
KERNEL_BACKWARD_LAYERS = {
    "lstm_bidir": lambda **kw: fusedrnn.LSTM(INPUT_SIZE, HIDDEN_SIZE, bidirectional=True, **kw),
    "lstm_proj": lambda **kw: fusedrnn.LSTM(INPUT_SIZE, HIDDEN_SIZE, proj_size=3, **kw),
    "gru_2layers": lambda **kw: fusedrnn.GRU(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, **kw),
    "rnn_tanh": lambda **kw: fusedrnn.RNN(INPUT_SIZE, HIDDEN_SIZE, **kw),
    "ln_lstm_zoneout": lambda **kw: fusedrnn.LayerNormLSTM(INPUT_SIZE, HIDDEN_SIZE, zoneout=(0.3, 0.2), **kw).eval(),
}
KERNEL_BACKWARD_PARAMS = [
    pytest.param(backend, dtype, device, layer_id, id=f"{backend}-{layer_id}", marks=marks)
    for backend, dtype, device, marks in KERNEL_BACKWARD_BACKENDS
    for layer_id in KERNEL_BACKWARD_LAYERS
    if not (backend == "cuda" and layer_id.startswith("ln_"))
]


@pytest.mark.parametrize("backend,dtype,device,layer_id", KERNEL_BACKWARD_PARAMS)
def test_create_graph_first_order_gradients_equal_the_kernel_backward(backend, dtype, device, layer_id, monkeypatch):
    """The first-order gradients of the create_graph path (fusedrnn.reference.layer_vjp) equal the kernels' own
    backward's, every input and parameter: the double-backward and torch.func tests above run only the former, so
    this ties what they check to the kernels. Counting layer_vjp's calls shows that the two runs took the two paths."""
    if registry.availability()[backend] is not None:  # triton: asserted available in test_registry.py
        pytest.skip(f"backend {backend!r} unavailable: {registry.availability()[backend]}")
    torch.manual_seed(0)
    module = KERNEL_BACKWARD_LAYERS[layer_id](backend=backend, dtype=dtype, device=device)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    vjp_calls = []
    layer_vjp = reference.layer_vjp
    monkeypatch.setattr(reference, "layer_vjp", lambda *a, **k: vjp_calls.append(1) or layer_vjp(*a, **k))
    results = []
    for create_graph in (False, True):
        leaves = [leaf(x.to(device, dtype)), *module.parameters()]
        outputs = [o for o in torch.utils._pytree.tree_leaves(module(leaves[0])) if o.requires_grad]
        generator = torch.Generator().manual_seed(2)
        upstream = [torch.randn(o.shape, generator=generator, dtype=torch.float64).to(o) for o in outputs]
        calls_before = len(vjp_calls)
        results.append(torch.autograd.grad(outputs, leaves, upstream, create_graph=create_graph))
        assert (len(vjp_calls) > calls_before) == create_graph, "the run did not take the path it is meant to test"
    for index, (kernel, graph) in enumerate(zip(*results)):
        torch.testing.assert_close(graph.detach(), kernel, **TOLERANCES[dtype], msg=lambda m, i=index: f"leaf {i}: {m}")


# ---------------------------------------------------------------------------------------------------------------
# 3. torch.func over functional_call


class Regressor(nn.Module):
    """A recurrent layer (or cell) and a linear read-out: the shape of model torch.func users differentiate."""

    def __init__(self, recurrent: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.recurrent = recurrent
        self.readout = nn.Linear(HIDDEN_SIZE, 1, dtype=dtype)

    def forward(self, x):
        return self.readout(first_output(self.recurrent, x)).squeeze(-1)


def regressor_twins(kind, backend, dtype):
    expected, actual = twins(kind, backend, dtype)
    torch.manual_seed(0)
    expected, actual = Regressor(expected, dtype), Regressor(actual, dtype)
    actual.readout.load_state_dict(expected.readout.state_dict())
    return expected, actual


TRANSFORMS = {
    "grad_params": lambda model, params, x: grad(lambda p: functional_call(model, p, (x,)).square().sum())(params),
    "jacrev_input": lambda model, params, x: jacrev(lambda x: functional_call(model, params, (x,)))(x),
    "vjp_input": lambda model, params, x: vjp(lambda x: functional_call(model, params, (x,)), x)[1](
        torch.ones_like(model(x))
    ),
}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("kind", LAYERS + CELLS[:1], ids=[k[0] for k in LAYERS + CELLS[:1]])
@pytest.mark.parametrize("backend,dtype", backend_params())
def test_torch_func_matches_torch_nn(backend, dtype, kind, transform):
    """torch.func's transforms over a model holding the layer. They always record a graph of the backward, so for the
    compiled backends the backward here is fusedrnn.reference.layer_vjp, not the kernels' (see the gradient penalty
    test): this checks the forward, the op's torch.func registration (setup_context, vmap rule) and that wiring."""
    x = example_input(kind, dtype)
    results = []
    for model in regressor_twins(kind, backend, dtype):
        params = {name: p.detach() for name, p in model.named_parameters()}
        results.append(TRANSFORMS[transform](model, params, x))
    expected, actual = (torch.utils._pytree.tree_leaves(r) for r in results)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert_same(a, e, dtype)


# ---------------------------------------------------------------------------------------------------------------
# 4. Whole-model torch.save / torch.load with the default weights_only=True, and 5. torch.jit.script


@pytest.mark.parametrize("kind", LAYERS + CELLS, ids=[k[0] for k in LAYERS + CELLS])
@pytest.mark.parametrize("backend,dtype", backend_params())
def test_whole_model_save_and_weights_only_load(backend, dtype, kind, tmp_path):
    """torch.nn's class loads once the user allows it (torch.nn does not allow its own classes by default); fusedrnn's
    are allowed at import, so they load as they are, with their backend, and compute the same."""
    expected, actual = twins(kind, backend, dtype)
    x = example_input(kind, dtype)
    torch.save(expected, tmp_path / "torch.pt")
    torch.save(actual, tmp_path / "fused.pt")
    with torch.serialization.safe_globals([kind[2]]):
        expected_loaded = torch.load(tmp_path / "torch.pt")
    actual_loaded = torch.load(tmp_path / "fused.pt")
    assert type(actual_loaded) is kind[1] and actual_loaded.backend == backend
    assert_same(first_output(actual_loaded, x), first_output(expected_loaded, x), dtype)


class StatefulUser(nn.Module):
    """A model passing a recurrent layer or cell an explicit state (the call TorchScript once failed to type)."""

    def __init__(self, recurrent: nn.Module) -> None:
        super().__init__()
        self.recurrent = recurrent


class LSTMUser(StatefulUser):
    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        out, _ = self.recurrent(x, (h, torch.zeros_like(h)))  # LSTM: y, (h_n, c_n); LSTMCell: h', c'
        return out


class LayerUser(StatefulUser):
    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        y, _ = self.recurrent(x, h)
        return y


class CellUser(StatefulUser):
    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.recurrent(x, h)


@pytest.mark.parametrize("kind", LAYERS + CELLS, ids=[k[0] for k in LAYERS + CELLS])
@pytest.mark.parametrize("backend,dtype", backend_params())
def test_jit_script_matches_torch_nn(backend, dtype, kind):
    """torch.jit.script compiles a model holding fusedrnn layers (as torch.nn's twin with the same parameters); the
    scripted model computes what the torch.nn model does, and saves and loads with torch.jit."""
    expected, actual = twins(kind, backend, dtype)
    user = LSTMUser if kind[0].startswith("lstm") else (CellUser if kind in CELLS else LayerUser)
    x = example_input(kind, dtype)
    h = torch.randn((BATCH, HIDDEN_SIZE) if kind in CELLS else (1, BATCH, HIDDEN_SIZE), dtype=dtype)
    reference_output = user(expected)(x, h)
    scripted = torch.jit.script(user(actual))
    assert_same(scripted(x, h), reference_output, dtype)
    assert_same(torch.jit.script(user(expected))(x, h), reference_output, dtype)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    assert_same(torch.jit.load(buffer)(x, h), reference_output, dtype)
    assert_same(user(actual)(x, h), reference_output, dtype)  # the eager model still runs its fusedrnn backend


# ---------------------------------------------------------------------------------------------------------------
# 6. Inter-layer dropout on a PackedSequence (issue 24): ATen drops out the packed data [sum(lengths), D*H], not the
# padded [T, N, D*H] output, so the masks, and everything drawn from torch's RNG afterwards, depend on that shape.

#: Unsorted lengths, so the packed batch is permuted as well (enforce_sorted=False), and one row of length 1.
DROPOUT_LENGTHS = [3, 5, 1, 4]
DROPOUT_P, DROPOUT_LAYERS, DROPOUT_SEED = 0.5, 3, 7
DROPOUT_KINDS = LAYERS + [("rnn_relu", fusedrnn.RNN, nn.RNN, {"nonlinearity": "relu"})]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidir"])
@pytest.mark.parametrize("kind", DROPOUT_KINDS, ids=[k[0] for k in DROPOUT_KINDS])
@pytest.mark.parametrize("backend,dtype", backend_params())
def test_packed_inter_layer_dropout_matches_torch_nn(backend, dtype, kind, bidirectional):
    """Training, dropout between 3 layers, packed input and a given state: every output and gradient as torch.nn's
    under the same seed, and the RNG left where torch.nn leaves it (the next draw is the same)."""
    _, fused_cls, torch_cls, extra = kind
    torch.manual_seed(0)
    kwargs = dict(input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, num_layers=DROPOUT_LAYERS, dropout=DROPOUT_P,
                  bidirectional=bidirectional, dtype=dtype, **extra)  # fmt: skip
    expected_module = torch_cls(**kwargs).train()
    actual_module = twin(expected_module, fused_cls, backend, **kwargs)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(max(DROPOUT_LENGTHS), len(DROPOUT_LENGTHS), INPUT_SIZE, generator=generator, dtype=dtype)
    states = DROPOUT_LAYERS * (2 if bidirectional else 1)
    h0 = torch.randn(states, len(DROPOUT_LENGTHS), HIDDEN_SIZE, generator=generator, dtype=dtype)

    def make_inputs():
        leaves = {"input": leaf(x), "h0": leaf(h0)}
        packed = pack_padded_sequence(leaves["input"], DROPOUT_LENGTHS, enforce_sorted=False)
        hx = (leaves["h0"], leaves["h0"] * 0.5) if kind[0] == "lstm" else leaves["h0"]
        return (packed, hx), leaves

    results, next_draws = [], []
    for module in (expected_module, actual_module):
        torch.manual_seed(DROPOUT_SEED)
        results.append(forward_backward(module, make_inputs))
        next_draws.append(torch.rand(16, dtype=torch.float64))
    assert_all_close(results[1], results[0], dtype)
    assert torch.equal(next_draws[1], next_draws[0]), "the call consumed a different amount of the random stream"
    with torch.no_grad():
        evaluated = expected_module.eval()(*make_inputs()[0])[0].data
    assert not torch.allclose(evaluated, results[0]["output[0]"]), "dropout had no effect: the test proves nothing"
