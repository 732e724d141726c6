"""num_heads on fusedrnn.LSTM / GRU / RNN (issue #21): a multi-head layer is torch.nn's layer with a block-diagonal
W_hh, so torch.nn itself, given that matrix written out with zero off-diagonal blocks, is the oracle; num_heads=1 is
torch.nn's layer unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from fusedrnn import registry
from fusedrnn.reference import rnn_layer
from parity import assert_all_close, forward_backward

T, N, I, H, K = 3, 3, 3, 4, 2
d = H // K
LENGTHS = torch.tensor([3, 2, 1])
CLASSES = {"LSTM": (fusedrnn.LSTM, nn.LSTM, {}), "GRU": (fusedrnn.GRU, nn.GRU, {}),
           "RNN_RELU": (fusedrnn.RNN, nn.RNN, {"nonlinearity": "relu"})}  # fmt: skip


def dense(blocks: torch.Tensor) -> torch.Tensor:
    """[K, G*d, d] -> the [G*H, H] matrix torch.nn would hold: gate g's rows of head k at g*H + k*d."""
    K_, Gd, d_ = blocks.shape
    G, H_ = Gd // d_, K_ * d_
    out = blocks.new_zeros(G * H_, H_)
    for k in range(K_):
        for g in range(G):
            out[g * H_ + k * d_ : g * H_ + (k + 1) * d_, k * d_ : (k + 1) * d_] = blocks[k, g * d_ : (g + 1) * d_]
    return out


def block_diagonal_part(full: torch.Tensor, K_: int) -> torch.Tensor:
    """The inverse of `dense` on the blocks (the gradient of the blocks is the dense gradient's blocks)."""
    GH, H_ = full.shape
    d_, G = H_ // K_, GH // H_
    return torch.stack([torch.cat([full[g * H_ + k * d_ : g * H_ + (k + 1) * d_, k * d_ : (k + 1) * d_]
                                   for g in range(G)]) for k in range(K_)])  # fmt: skip


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("name", CLASSES, ids=CLASSES.keys())
def test_heads_match_torch_nn_with_a_block_diagonal_matrix(name, packed):
    fused_cls, torch_cls, kwargs = CLASSES[name]
    torch.manual_seed(0)
    fused = fused_cls(I, H, 2, bidirectional=True, num_heads=K, dtype=torch.float64, **kwargs)
    twin = torch_cls(I, H, 2, bidirectional=True, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        for pname, p in fused.named_parameters():
            getattr(twin, pname).copy_(dense(p) if pname.startswith("weight_hh") else p)

    def make_inputs():
        x = torch.randn(T, N, I, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
        return ((pack_padded_sequence(x, LENGTHS) if packed else x),), {"x": x}

    actual = forward_backward(fused, make_inputs)
    expected = forward_backward(twin, make_inputs)
    for pname in [key for key in expected if key.startswith("grad weight_hh")]:
        expected[pname] = block_diagonal_part(expected[pname], K)
    assert_all_close(actual, expected, torch.float64)


def test_reference_gradcheck_with_heads():
    g = torch.Generator().manual_seed(0)
    x, w_ih, w_hh, b_hh = (torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
                           for s in ((T, N, I), (3 * H, I), (K, 3 * d, d), (3 * H,)))  # fmt: skip
    h0 = torch.randn(N, H, generator=g, dtype=torch.float64, requires_grad=True)

    def layer(*args):
        return rnn_layer("GRU", args[0], args[1], None, args[2], args[3], None, args[4], reverse=True,
                         lengths=LENGTHS)[:2]  # fmt: skip

    inputs = (x, h0, w_ih, w_hh, b_hh)
    assert torch.autograd.gradcheck(layer, inputs)
    assert torch.autograd.gradgradcheck(layer, inputs, fast_mode=True)


def test_one_head_is_torch_nn_unchanged():
    torch.manual_seed(0)
    fused = fusedrnn.LSTM(I, H, num_heads=1)
    torch.manual_seed(0)
    original = nn.LSTM(I, H)
    assert "num_heads" not in vars(fused) and repr(fused) == repr(original)
    for (name, p), (name_t, p_t) in zip(fused.named_parameters(), original.named_parameters()):
        assert name == name_t and torch.equal(p, p_t)


ERRORS = {
    "not_dividing": (dict(num_heads=3), ValueError, "divisible by num_heads"),
    "zero": (dict(num_heads=0), ValueError, "greater than zero"),
    "float": (dict(num_heads=2.0), TypeError, "num_heads should be of type int"),
    "bool": (dict(num_heads=True), TypeError, "num_heads should be of type int"),
    "proj_size": (dict(num_heads=2, proj_size=2), ValueError, "proj_size"),
}


@pytest.mark.parametrize("kwargs, error, text", ERRORS.values(), ids=ERRORS.keys())
def test_constructor_errors(kwargs, error, text):
    with pytest.raises(error, match=text):
        fusedrnn.LSTM(I, H, **kwargs)


def test_refusals():
    module = fusedrnn.GRU(I, H, num_heads=K)
    with pytest.raises(ValueError, match="no heads"):
        fusedrnn.restore_rnns(nn.Sequential(module))
    assert type(module) is fusedrnn.GRU
    with pytest.raises(RuntimeError, match="num_heads=2"):
        torch.jit.script(module)
    call = registry.RNNCall("GRU", "cpu", torch.float32, I, H, num_heads=K)
    for name in ("torch", "cpu", "triton", "cuda"):
        loaded = registry._load(name)  # the instance, or why its module did not import (then nothing to ask)
        assert isinstance(loaded, str) or "multi-head" in loaded.unsupported_reason(call)
    assert registry.select("auto", call).name == "reference"
    with pytest.raises(registry.BackendError, match="issue #21"):
        fusedrnn.GRU(I, H, num_heads=K, backend="torch")(torch.randn(T, N, I))
