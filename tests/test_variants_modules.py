"""The issue-#15 modules: LayerNormLSTM, LayerNormGRU, IndRNN (+ cells) and zoneout / weight_dropout on fusedrnn.LSTM
and GRU, on every backend that serves them here, against the oracle stacked by hand (fusedrnn.reference.rnn_layer
per layer direction, the masks drawn in the documented order from the same seed); torch.nn's contract (arguments,
packed / batch_first / unbatched input, state shapes and errors) against torch.nn's own classes."""

from __future__ import annotations

import copy
import dataclasses
import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pack_sequence, pad_packed_sequence

import cpu_backends
import fusedrnn
from fusedrnn import registry
from fusedrnn.reference import GATES, ZoneoutMasks, rnn_layer
from parity import TOLERANCES, assert_all_close, assert_as_close_to_float64, dropout_drawn_as_float32

I, H, T, N = 3, 4, 5, 3

#: id -> (class, constructor keywords, torch.nn class with the same contract, its keywords, mode, layer norm)
LAYERS = {
    "ln_lstm": (fusedrnn.LayerNormLSTM, {}, nn.LSTM, {}, "LSTM", True),
    "ln_gru": (fusedrnn.LayerNormGRU, {}, nn.GRU, {}, "GRU", True),
    "indrnn_tanh": (fusedrnn.IndRNN, {}, nn.RNN, {}, "INDRNN_TANH", False),
    "indrnn_relu": (fusedrnn.IndRNN, {"nonlinearity": "relu"}, nn.RNN, {"nonlinearity": "relu"}, "INDRNN_RELU", False),
}
#: Configurations of the stacked comparison: (id, constructor keywords, packed input with these lengths or None).
CONFIGS = [
    ("one_layer", {}, None),
    ("stacked_bidirectional_dropout", {"num_layers": 2, "bidirectional": True, "dropout": 0.4}, None),
    ("no_bias", {"bias": False}, None),
    ("packed_stacked_bidirectional", {"num_layers": 2, "bidirectional": True}, [T, T - 2, 1]),
    ("packed_stacked_dropout", {"num_layers": 3, "bidirectional": True, "dropout": 0.4}, [T, T - 2, 1]),
]
#: Regularisers: (id, zoneout, weight_dropout).
REGULARISERS = [("none", 0.0, 0.0), ("zoneout", 0.3, 0.0), ("zoneout_pair", (0.2, 0.5), 0.0),
                ("weight_dropout", 0.0, 0.4), ("both", 0.25, 0.3)]  # fmt: skip


#: The backends meant to serve the variants on CPU (torch never does; cuda runs CUDA tensors only), each forced by
#: name: `auto` only picks one of them (test_auto_picks_the_most_preferred_backend_serving_the_call).
CPU_VARIANT_BACKENDS = ["reference", "cpu", "triton"]


def backend_params(mode: str, layer_norm: bool, zoneout: bool) -> list:
    """(backend, dtype) for each of CPU_VARIANT_BACKENDS, in float64 where it serves this variant, else float32
    (triton's interpreter); one that serves neither is skipped with its reason."""
    params = []
    for name in CPU_VARIANT_BACKENDS:
        reasons = []
        for dtype in (torch.float64, torch.float32):
            call = registry.RNNCall(mode, "cpu", dtype, I, H, layer_norm=layer_norm, zoneout=zoneout)
            try:
                reason = registry.availability()[name] or registry.get_backend(name).unsupported_reason(call)
            except Exception as error:  # noqa: BLE001 - reported as the skip reason
                reason = str(error)
            if reason is None:
                params.append(pytest.param(name, dtype, id=f"{name}-{str(dtype).removeprefix('torch.')}"))
                break
            reasons.append(reason)
        else:
            skip = pytest.mark.skip(reason=f"{name}: " + "; ".join(dict.fromkeys(reasons)))
            params.append(pytest.param(name, torch.float64, id=name, marks=skip))
    return params


def expected_stack(module, x, h0, c0, seed, lengths=None):
    """The module's forward composed by hand from the oracle, drawing from torch's RNG in the documented order:
    weight_dropout's W_hh copies, then zoneout masks (h then c) per layer direction, then inter-layer dropout
    (packed input: on the packed data, as torch.nn).
    `lengths` [N] (decreasing: the packed batch's order is x's): each row's valid steps, outputs past them zero."""
    torch.manual_seed(seed)
    D = 2 if module.bidirectional else 1
    groups = module.layer_weights()  # parameters per layer direction, in torch.nn's flat order
    training = module.training
    if training and module.weight_dropout:
        groups = [g._replace(w_hh=F.dropout(g.w_hh, module.weight_dropout)) for g in groups]
    p_h, p_c = fusedrnn.modules.zoneout_rates(module.zoneout, module.mode)
    masks = [None] * len(groups)
    if p_h or p_c:
        with_c = module.mode == "LSTM" and p_c > 0
        shape = (x.shape[0], x.shape[1], module.hidden_size)

        def mask(p):
            if not training:
                return torch.full(shape, p, dtype=x.dtype)
            # Tensor.bernoulli_(p), as the module draws: torch.bernoulli of a full tensor reads the RNG differently
            # in float32 (the triton backend's dtype here), though the same in float64.
            return torch.empty(shape, dtype=x.dtype).bernoulli_(p) if p else torch.zeros(shape, dtype=x.dtype)

        masks = []
        for _ in groups:
            h_mask = mask(p_h)
            masks.append(ZoneoutMasks(h_mask, mask(p_c) if with_c else None))
    layer_input, h_n, c_n = x, [], []
    for layer in range(module.num_layers):
        outputs = []
        for direction in range(D):
            k = layer * D + direction
            g = groups[k]
            y, h, c = rnn_layer(module.mode, layer_input, h0[k], None if c0 is None else c0[k], *g[:5],
                                reverse=direction == 1, lengths=lengths, norm=g.norm, zoneout=masks[k])  # fmt: skip
            outputs.append(y)
            h_n.append(h)
            c_n.append(c)
        layer_input = torch.cat(outputs, -1)
        if training and module.dropout and layer < module.num_layers - 1:
            if lengths is None:
                layer_input = F.dropout(layer_input, module.dropout)
            else:  # as torch.nn (ATen): on the packed data, the valid steps only
                packed = pack_padded_sequence(layer_input, lengths)
                dropped = PackedSequence(F.dropout(packed.data, module.dropout), packed.batch_sizes)
                layer_input = pad_packed_sequence(dropped, total_length=x.shape[0])[0]
    return layer_input, torch.stack(h_n), (torch.stack(c_n) if c0 is not None else None)


def compare_with_stack(module, dtype, seed=0, lengths=None):
    """Module forward + backward against expected_stack, every output and every gradient; with `lengths`
    (decreasing), the input is packed from x [T, N, I] and the packed output padded back for the comparison.
    float64: within the parity tolerance. float32 (triton's interpreter): against expected_stack in float64 (the
    truth, with the same masks), at most ERROR_RATIO times the oracle's own float32 error or within the float32
    tolerance relative to the largest value (layer norm of a row with a small variance amplifies rounding)."""
    generator = torch.Generator().manual_seed(seed + 1)
    D = 2 if module.bidirectional else 1
    lstm = module.mode == "LSTM"
    states = (module.num_layers * D, N, H)
    values = [torch.randn(T, N, I, generator=generator, dtype=torch.float64),
              torch.randn(states, generator=generator, dtype=torch.float64)]  # fmt: skip
    if lstm:
        values.append(torch.randn(states, generator=generator, dtype=torch.float64))

    def module_forward(m, x, h0, c0):
        if lengths is None:
            y, hidden = m(x, (h0, c0) if lstm else h0)
        else:
            packed, hidden = m(pack_padded_sequence(x, torch.tensor(lengths)), (h0, c0) if lstm else h0)
            y, _ = pad_packed_sequence(packed, total_length=T)
        return [y, *(hidden if lstm else (hidden,))]

    def stack_forward(m, x, h0, c0):
        return [o for o in expected_stack(m, x, h0, c0, seed, None if lengths is None else torch.tensor(lengths))
                if o is not None]  # fmt: skip

    def run(forward, m, run_dtype):
        x, h0, *c0 = [v.to(run_dtype).requires_grad_() for v in values]
        c0 = c0[0] if c0 else None
        leaves = [x, h0] + ([c0] if lstm else []) + list(m.parameters())
        torch.manual_seed(seed)
        outputs = forward(m, x, h0, c0)
        upstream_generator = torch.Generator().manual_seed(seed + 2)
        upstream = [torch.randn(o.shape, generator=upstream_generator, dtype=torch.float64).to(o) for o in outputs]
        grads = torch.autograd.grad(outputs, leaves, upstream, allow_unused=True)
        result = {f"output[{i}]": o.detach() for i, o in enumerate(outputs)}
        result.update({f"grad[{i}]": g for i, g in enumerate(grads)})
        return result

    actual, expected = run(module_forward, module, dtype), run(stack_forward, module, dtype)
    if dtype == torch.float64:
        assert_all_close(actual, expected, dtype)
        return
    with dropout_drawn_as_float32():
        truth = run(stack_forward, copy.deepcopy(module).double(), torch.float64)
    assert_as_close_to_float64(actual, expected, truth, dtype, relative_floor=True)


def variant_cases():
    for layer_id, (cls, kwargs, _, _, mode, layer_norm) in LAYERS.items():
        for config_id, config, lengths in CONFIGS:
            for reg_id, zoneout, weight_dropout in REGULARISERS:
                if isinstance(zoneout, tuple) and mode != "LSTM":
                    continue
                for training in (True, False):
                    if not training and reg_id in ("none", "weight_dropout"):
                        continue  # eval without zoneout is the plain layer, covered by training=True with none
                    for param in backend_params(mode, layer_norm, bool(zoneout)):
                        backend, dtype = param.values
                        case_id = f"{layer_id}-{config_id}-{reg_id}-{'train' if training else 'eval'}-{param.id}"
                        yield pytest.param(cls, dict(kwargs, **config), lengths, zoneout, weight_dropout, training,
                                           backend, dtype, id=case_id, marks=param.marks)  # fmt: skip


@pytest.mark.parametrize("cls, kwargs, lengths, zoneout, weight_dropout, training, backend, dtype",
                         list(variant_cases()))  # fmt: skip
def test_variant_module_matches_oracle_stack(cls, kwargs, lengths, zoneout, weight_dropout, training, backend, dtype):
    torch.manual_seed(0)
    module = cls(I, H, **kwargs, zoneout=zoneout, weight_dropout=weight_dropout, backend=backend, dtype=dtype)
    with torch.no_grad():  # LN gains away from their initial 1 and 0, so that a misplaced gain shows
        for name, p in module.named_parameters():
            if name.startswith("ln_"):
                p.add_(0.3 * torch.randn_like(p))
    compare_with_stack(module.train(training), dtype, lengths=lengths)


#: id -> (class, mode, keywords, packed input's lengths or None). fusedrnn.RNN takes the options too (through the
#: shared base; not in torch.nn).
REGULARISED_PLAIN = {
    "lstm-both": (fusedrnn.LSTM, "LSTM", {"zoneout": (0.3, 0.1), "weight_dropout": 0.2}, None),
    "lstm-zoneout-stacked": (fusedrnn.LSTM, "LSTM", {"zoneout": 0.4, "num_layers": 2, "bidirectional": True}, None),
    "lstm-zoneout-packed": (fusedrnn.LSTM, "LSTM", {"zoneout": (0.4, 0.2), "bidirectional": True}, [T, T - 2, 1]),
    "gru-both-stacked": (fusedrnn.GRU, "GRU", {"zoneout": 0.3, "weight_dropout": 0.5, "num_layers": 2, "dropout": 0.3},
                         None),  # fmt: skip
    "gru-weight_dropout": (fusedrnn.GRU, "GRU", {"weight_dropout": 0.5}, None),
    "rnn_relu-both": (fusedrnn.RNN, "RNN_RELU", {"nonlinearity": "relu", "zoneout": 0.3, "weight_dropout": 0.3}, None),
}


def regularised_cases():
    for case_id, (cls, mode, kwargs, lengths) in REGULARISED_PLAIN.items():
        for training in (True, False):
            for param in backend_params(mode, False, "zoneout" in kwargs):
                backend, dtype = param.values
                yield pytest.param(cls, kwargs, lengths, training, backend, dtype, marks=param.marks,
                                   id=f"{case_id}-{'train' if training else 'eval'}-{param.id}")  # fmt: skip


@pytest.mark.parametrize("cls, kwargs, lengths, training, backend, dtype", list(regularised_cases()))
def test_regularised_lstm_gru_match_oracle_stack(cls, kwargs, lengths, training, backend, dtype):
    torch.manual_seed(0)
    compare_with_stack(cls(I, H, **kwargs, backend=backend, dtype=dtype).train(training), dtype, lengths=lengths)


def recorded_selections(monkeypatch) -> list:
    """(RNNCall, selected backend's name) of every layer call from now on."""
    selections = []
    select_call = registry.select_call

    def recording_select(requested, fields):
        backend, call = select_call(requested, fields)
        selections.append((call, backend.name))
        return backend, call

    monkeypatch.setattr(registry, "select_call", recording_select)
    return selections


#: Zero regularisers as a user may spell them: (id, class, zoneout). (0.0, 0.0) is no zoneout, like 0.0.
ZERO_REGULARISERS = [("lstm", fusedrnn.LSTM, 0.0), ("lstm_zero_pair", fusedrnn.LSTM, (0.0, 0.0)),
                     ("gru_int", fusedrnn.GRU, 0)]  # fmt: skip


@pytest.mark.parametrize("backend, dtype", cpu_backends.backend_params())
@pytest.mark.parametrize("layer_id, cls, zoneout", ZERO_REGULARISERS, ids=[case[0] for case in ZERO_REGULARISERS])
def test_default_regularisers_leave_torch_nn_contract_bit_identical(layer_id, cls, zoneout, backend, dtype,
                                                                    monkeypatch):  # fmt: skip
    """zoneout=0, weight_dropout=0 given explicitly is the module built without them: the same selected backend and
    RNNCall, bitwise the same outputs and gradients, the same RNG state after (inter-layer dropout draws included),
    and a module __dict__ and repr without the options (torch.nn's)."""
    torch.manual_seed(0)
    plain = cls(I, H, num_layers=2, dropout=0.5, backend=backend, dtype=dtype)
    module = cls(I, H, num_layers=2, dropout=0.5, zoneout=zoneout, weight_dropout=0.0, backend=backend, dtype=dtype)
    module.load_state_dict(plain.state_dict())
    assert module.__dict__.keys() == plain.__dict__.keys() and repr(module) == repr(plain)
    x = torch.randn(T, N, I, dtype=dtype)
    selections = recorded_selections(monkeypatch)
    results = []
    for layer in (plain, module):
        torch.manual_seed(5)
        y, _ = layer(x)
        grads = torch.autograd.grad(y.sum(), list(layer.parameters()))
        results.append((y, grads, torch.get_rng_state()))
    (y, grads, rng), (y_z, grads_z, rng_z) = results
    assert len(selections) == 2 and selections[0] == selections[1]
    assert torch.equal(y, y_z)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_z))
    assert torch.equal(rng, rng_z)


@pytest.mark.parametrize("cls", [fusedrnn.LayerNormLSTM, fusedrnn.LSTM, fusedrnn.IndRNN],
                         ids=["ln_lstm", "lstm", "indrnn"])  # fmt: skip
def test_seed_reproduces_regularised_training_run(cls):
    module = cls(I, H, num_layers=2, dropout=0.3, zoneout=0.3, weight_dropout=0.3)
    x = torch.randn(T, N, I)
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        runs.append(module(x)[0])
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_weight_dropout_warns_nothing_and_masks_once_per_call():
    """One F.dropout of W_hh per layer direction and call (two calls of the RNG on a one-layer bidirectional LSTM),
    and eval runs the parameter itself. The no-warning check guards only against torch's cuDNN warning ("not part
    of a single contiguous chunk"), which cannot show on CPU; what keeps the dropped W_hh away from cuDNN's flat
    buffer is the torch backend's refusal (test_torch_backend_refuses_weight_dropout_on_cuda_only)."""
    module = fusedrnn.LSTM(I, H, bidirectional=True, weight_dropout=0.5, dtype=torch.float64)
    x = torch.randn(T, N, I, dtype=torch.float64)
    calls = []
    original = F.dropout

    def counting_dropout(input, *args, **kwargs):
        calls.append(input.shape)
        return original(input, *args, **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.dropout = counting_dropout
        try:
            module(x)
        finally:
            F.dropout = original
    assert calls == [module.weight_hh_l0.shape] * 2
    module.eval()
    plain = fusedrnn.LSTM(I, H, bidirectional=True, dtype=torch.float64)
    plain.load_state_dict(module.state_dict())
    assert torch.equal(module(x)[0], plain.eval()(x)[0])


def test_torch_backend_refuses_weight_dropout_on_cuda_only():
    call = registry.RNNCall("LSTM", "cuda", torch.float32, I, H, weight_dropout=True)
    assert "flat buffer" in registry.get_backend("torch").unsupported_reason(call)
    assert registry.get_backend("torch").unsupported_reason(dataclasses.replace(call, device_type="cpu")) is None


@pytest.mark.parametrize("layer_id", LAYERS)
def test_variants_refused_by_torch(layer_id):
    cls, kwargs, _, _, mode, layer_norm = LAYERS[layer_id]
    call = registry.RNNCall(mode, "cpu", torch.float64, I, H, layer_norm=layer_norm)
    assert "torch's RNN kernels have no" in registry.get_backend("torch").unsupported_reason(call)
    with pytest.raises(registry.BackendError, match="torch's RNN kernels have no"):
        cls(I, H, **kwargs, backend="torch")(torch.randn(T, N, I))


@pytest.mark.parametrize("zoneout", [0.0, 0.3], ids=["plain", "zoneout"])
@pytest.mark.parametrize("layer_id", LAYERS)
def test_auto_picks_the_most_preferred_backend_serving_the_call(layer_id, zoneout, monkeypatch):
    """`auto` runs a variant on the available backend of highest preference that serves the call (today
    `reference`; `cpu` or `triton` once their kernels serve it), and computes what that backend computes."""
    monkeypatch.delenv(registry.BACKEND_ENV, raising=False)
    cls, kwargs, *_ = LAYERS[layer_id]
    torch.manual_seed(0)
    module = cls(I, H, **kwargs, zoneout=zoneout, dtype=torch.float64).eval()
    x = torch.randn(T, N, I, dtype=torch.float64)
    selections = recorded_selections(monkeypatch)
    y, _ = module(x)
    ((call, selected),) = selections
    serving = [(registry.get_backend(name).preference(call), name) for name in registry.backend_names()
               if registry.availability()[name] is None and registry.get_backend(name).unsupported_reason(call) is None]
    ranked = sorted((pair for pair in serving if pair[0] > 0), key=lambda pair: -pair[0])  # fmt: skip
    assert ranked and selected == ranked[0][1], (selected, ranked)
    forced = cls(I, H, **kwargs, zoneout=zoneout, dtype=torch.float64, backend=selected).eval()
    forced.load_state_dict(module.state_dict())
    assert torch.equal(forced(x)[0], y)


#: Variant calls at the hidden sizes people train (issue #22): (mode, layer norm, zoneout, weight dropout).
CUDA_VARIANT_CALLS = [("LSTM", True, False, False), ("GRU", True, False, False), ("LSTM", True, True, False),
                      ("LSTM", False, True, False), ("GRU", False, True, False), ("RNN_TANH", False, True, False),
                      ("INDRNN_TANH", False, False, False), ("INDRNN_RELU", False, True, False),
                      ("LSTM", False, False, True)]  # fmt: skip


@pytest.mark.parametrize("hidden", [256, 1024], ids=["H256", "H1024"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("mode, layer_norm, zoneout, weight_dropout", CUDA_VARIANT_CALLS,
                         ids=["ln_lstm", "ln_gru", "ln_lstm_zoneout", "lstm_zoneout", "gru_zoneout", "rnn_zoneout",
                              "indrnn_tanh", "indrnn_relu_zoneout", "lstm_weight_dropout"])  # fmt: skip
def test_auto_on_cuda_ranks_a_fused_backend_above_reference(mode, layer_norm, zoneout, weight_dropout, dtype, hidden):
    """Issue #22: `auto` never picks `reference` on CUDA for a variant call that `cuda` or `triton` serves. Without a
    GPU their availability is unknown here, so this checks what `auto` ranks by on a GPU machine: the serving
    backend of highest preference (registry._select_cached) is a fused one, and both fused backends serve the call."""
    call = registry.RNNCall(mode, "cuda", dtype, hidden, hidden, batch_size=64, seq_len=100, num_layers=2,
                            bidirectional=True, layer_norm=layer_norm, zoneout=zoneout,
                            weight_dropout=weight_dropout)  # fmt: skip
    loaded = {name: registry._load(name) for name in registry.backend_names()}  # available here or not
    serving = {name: backend.preference(call) for name, backend in loaded.items()
               if isinstance(backend, registry.Backend) and backend.unsupported_reason(call) is None}  # fmt: skip
    assert {"cuda", "triton"} <= serving.keys(), serving
    ranked = sorted((name for name, preference in serving.items() if preference > 0), key=lambda n: -serving[n])
    assert ranked[0] in ("cuda", "triton"), ranked
    assert serving["reference"] < serving[ranked[0]], serving


# ---------------------------------------------------------------------------------------------------------------
# torch.nn's contract


@pytest.mark.parametrize("layer_id", LAYERS)
def test_packed_batch_first_and_unbatched_inputs(layer_id):
    """A packed batch (unsorted) equals each sequence run alone, unbatched; batch_first is a transpose (eval with
    zoneout: the expectation, deterministic)."""
    cls, kwargs, *_ = LAYERS[layer_id]
    torch.manual_seed(0)
    module = cls(I, H, num_layers=2, bidirectional=True, zoneout=0.3, dtype=torch.float64, **kwargs).eval()
    sequences = [torch.randn(length, I, dtype=torch.float64) for length in (3, 5, 2)]
    packed_out, packed_hidden = module(pack_sequence(sequences, enforce_sorted=False))
    padded, lengths = pad_packed_sequence(packed_out)
    lstm = isinstance(packed_hidden, tuple)
    tolerance = TOLERANCES[torch.float64]
    for n, sequence in enumerate(sequences):
        y, hidden = module(sequence)
        torch.testing.assert_close(padded[: lengths[n], n], y, **tolerance)
        for a, b in zip(packed_hidden if lstm else (packed_hidden,), hidden if lstm else (hidden,)):
            torch.testing.assert_close(a[:, n], b, **tolerance)
    batch = torch.randn(T, N, I, dtype=torch.float64)
    first = cls(I, H, num_layers=2, bidirectional=True, batch_first=True, zoneout=0.3, dtype=torch.float64, **kwargs)
    first.load_state_dict(module.state_dict())
    first.eval()
    torch.testing.assert_close(first(batch.transpose(0, 1))[0].transpose(0, 1), module(batch)[0], **tolerance)


BAD_CONSTRUCTORS = [
    pytest.param({"hidden_size": 0}, id="hidden_zero"),
    pytest.param({"hidden_size": 2.5}, id="hidden_float"),
    pytest.param({"num_layers": 0}, id="layers_zero"),
    pytest.param({"dropout": 1.5}, id="dropout_big"),
    pytest.param({"dropout": True}, id="dropout_bool"),
]


@pytest.mark.parametrize("bad", BAD_CONSTRUCTORS)
@pytest.mark.parametrize("layer_id", LAYERS)
def test_constructor_errors_as_torch_nn(layer_id, bad):
    cls, kwargs, torch_cls, torch_kwargs, *_ = LAYERS[layer_id]
    arguments = {"input_size": I, "hidden_size": H, **bad}
    with pytest.raises(Exception) as expected:
        torch_cls(**arguments, **torch_kwargs)
    with pytest.raises(expected.type):
        cls(**arguments, **kwargs)


@pytest.mark.parametrize(
    "cls, options",
    [
        (fusedrnn.LSTM, {"zoneout": 1.5}),
        (fusedrnn.LSTM, {"zoneout": True}),
        (fusedrnn.LSTM, {"zoneout": (0.1,)}),
        (fusedrnn.GRU, {"zoneout": (0.1, 0.2)}),
        (fusedrnn.IndRNN, {"zoneout": (0.1, 0.2)}),
        (fusedrnn.LSTM, {"zoneout": 0.1, "proj_size": 2}),
        (fusedrnn.LayerNormGRU, {"weight_dropout": -0.1}),
        (fusedrnn.IndRNN, {"nonlinearity": "sigmoid"}),
    ],
    ids=["rate_big", "rate_bool", "pair_short", "pair_gru", "pair_indrnn", "with_projection", "weight_dropout_neg",
         "nonlinearity"],  # fmt: skip
)
def test_option_errors(cls, options):
    with pytest.raises(ValueError):
        cls(I, H, **options)


@pytest.mark.parametrize("cls", [fusedrnn.IndRNN, fusedrnn.GRU, fusedrnn.LayerNormGRU], ids=lambda cls: cls.__name__)
def test_zoneout_pair_error_names_the_class(cls):
    """IndRNN is built on torch.nn's RNN_TANH: the message names the class the user built, not its base mode."""
    with pytest.raises(ValueError, match=f"give {cls.__name__} one rate"):
        cls(I, H, zoneout=(0.1, 0.2))


@pytest.mark.parametrize("zoneout", [(0.0, 0.0), [0, 0.0], 0], ids=["pair", "list", "int"])
def test_all_zero_zoneout_is_no_zoneout(zoneout):
    """Stored normalised (a float or a tuple of floats) and only when on: zero rates, however spelt, are torch.nn's
    LSTM, so proj_size, torch.jit.script and restore_rnns accept it."""
    module = fusedrnn.LSTM(I, H, proj_size=2, zoneout=zoneout)
    assert not module.regularised and "zoneout" not in module.__dict__
    scripted = torch.jit.script(nn.Sequential(module))  # a scripted torch.nn.LSTM has no forward of its own
    x = torch.randn(T, N, I)
    torch.testing.assert_close(scripted(x)[0], module(x)[0])
    assert type(fusedrnn.restore_rnns(nn.Sequential(module))[0]) is nn.LSTM
    assert fusedrnn.LSTM(I, H, zoneout=[0, 1]).zoneout == (0.0, 1.0)
    assert type(fusedrnn.GRU(I, H, zoneout=1).zoneout) is float


def test_layer_norm_lstm_positional_arguments_follow_torch_nn_lstm():
    """torch.nn.LSTM's order: proj_size is the 8th positional, device the 9th; a nonzero proj_size is refused."""
    module = fusedrnn.LayerNormLSTM(I, H, 1, True, False, 0.0, False, 0, "cpu", torch.float64)
    assert module.weight_ih_l0.dtype == torch.float64 and module.proj_size == 0
    with pytest.raises(ValueError, match="proj_size"):
        fusedrnn.LayerNormLSTM(I, H, 1, True, False, 0.0, False, 2)


def test_quantize_dynamic_refuses_regularised_layers_saying_so():
    model = nn.Sequential(fusedrnn.LSTM(I, H, zoneout=0.1))
    with pytest.raises(ValueError, match="cannot quantize LSTM with zoneout"):
        fusedrnn.quantize_dynamic(model)
    assert type(model[0]) is fusedrnn.LSTM


BAD_STATES = [
    pytest.param(lambda D: torch.randn(D, N, H + 1), id="hidden_size"),
    pytest.param(lambda D: torch.randn(D + 1, N, H), id="layers"),
    pytest.param(lambda D: torch.randn(D, N + 1, H), id="batch"),
    pytest.param(lambda D: torch.randn(N, H), id="rank"),
]


@pytest.mark.parametrize("bad_state", BAD_STATES)
@pytest.mark.parametrize("layer_id", LAYERS)
def test_state_shape_errors_as_torch_nn(layer_id, bad_state):
    cls, kwargs, torch_cls, torch_kwargs, *_ = LAYERS[layer_id]
    x = torch.randn(T, N, I)
    state = bad_state(1)
    lstm = torch_cls is nn.LSTM
    hx = (state, torch.zeros(1, N, H)) if lstm else state
    with pytest.raises(Exception) as expected:
        torch_cls(I, H, **torch_kwargs)(x, hx)
    with pytest.raises(expected.type):
        cls(I, H, **kwargs)(x, hx)


def test_lstm_state_must_be_a_pair():
    """As fusedrnn.LSTM (torch.nn.LSTM fails with an IndexError from inside its checks)."""
    with pytest.raises(TypeError, match="tuple"):
        fusedrnn.LayerNormLSTM(I, H)(torch.randn(T, N, I), torch.zeros(1, N, H))


@pytest.mark.parametrize("layer_id", LAYERS)
def test_parameters_names_shapes_and_init(layer_id):
    cls, kwargs, torch_cls, torch_kwargs, mode, layer_norm = LAYERS[layer_id]
    module = cls(I, H, num_layers=2, bidirectional=True, **kwargs)
    torch_module = torch_cls(I, H, num_layers=2, bidirectional=True, **torch_kwargs)
    torch_names = [name for name, _ in torch_module.named_parameters()]
    names = [name for name, _ in module.named_parameters()]
    assert names[: len(torch_names)] == torch_names  # torch.nn's first, in its order
    G = GATES[mode]
    for name, p in module.named_parameters():
        if name.startswith("ln_c"):
            assert p.shape == (H,) and torch.all(p == (0 if "bias" in name else 1))
        elif name.startswith("ln_"):
            assert p.shape == (G * H,) and torch.all(p == 1)
        elif name.startswith("weight_hh") and mode.startswith("INDRNN"):
            assert p.shape == (H,) and p.abs().max() <= fusedrnn.variants.INDRNN_SCALE_INIT
        else:
            assert p.abs().max() <= H**-0.5  # torch.nn's U(-1/sqrt(H), 1/sqrt(H))
    expected_ln = {"LSTM": 4, "GRU": 2}.get(mode, 0) * 4 if layer_norm else 0
    assert len(names) - len(torch_names) == expected_ln
    module.double()  # _apply: the IndRNN vector and the LN weights follow, no cuDNN flattening attempted
    assert all(p.dtype == torch.float64 for p in module.parameters())


@pytest.mark.parametrize("layer_id", LAYERS)
def test_state_dict_and_whole_model_weights_only_load(layer_id):
    cls, kwargs, *_ = LAYERS[layer_id]
    module = cls(I, H, num_layers=2, zoneout=0.2, **kwargs).eval()
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)  # weights_only=True by default: needs the safe globals
    x = torch.randn(T, N, I)
    torch.testing.assert_close(loaded(x)[0], module(x)[0], rtol=0, atol=0)
    fresh = cls(I, H, num_layers=2, zoneout=0.2, **kwargs).eval()
    fresh.load_state_dict(module.state_dict())
    torch.testing.assert_close(fresh(x)[0], module(x)[0], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Cells

CELLS = {
    "ln_lstm_cell": (fusedrnn.LayerNormLSTMCell, fusedrnn.LayerNormLSTM, {}),
    "ln_gru_cell": (fusedrnn.LayerNormGRUCell, fusedrnn.LayerNormGRU, {}),
    "indrnn_relu_cell": (fusedrnn.IndRNNCell, fusedrnn.IndRNN, {"nonlinearity": "relu"}),
}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("cell_id", CELLS)
def test_cell_is_one_step_of_the_layer(cell_id, bias):
    cell_cls, layer_cls, kwargs = CELLS[cell_id]
    torch.manual_seed(0)
    cell = cell_cls(I, H, bias, dtype=torch.float64, **kwargs)
    layer = layer_cls(I, H, bias=bias, dtype=torch.float64, **kwargs)
    layer.load_state_dict({f"{name}_l0": p for name, p in cell.state_dict().items()})
    x = torch.randn(N, I, dtype=torch.float64)
    lstm = cell_cls is fusedrnn.LayerNormLSTMCell
    h = torch.randn(N, H, dtype=torch.float64)
    state = (h, torch.randn(N, H, dtype=torch.float64)) if lstm else h
    out = cell(x, state)
    _, hidden = layer(x[None], tuple(s[None] for s in state) if lstm else state[None])
    tolerance = TOLERANCES[torch.float64]
    for a, b in zip(out if lstm else (out,), hidden if lstm else (hidden,)):
        torch.testing.assert_close(a, b[0], **tolerance)
    unbatched = cell(x[0], tuple(s[0] for s in state) if lstm else state[0])  # torch.nn's unbatched cell input
    torch.testing.assert_close(unbatched[0] if lstm else unbatched, (out[0] if lstm else out)[0], **tolerance)


# ---------------------------------------------------------------------------------------------------------------
# Scripting, tracing, replace_rnns


@pytest.mark.parametrize("module", [fusedrnn.LayerNormLSTM(I, H), fusedrnn.IndRNNCell(I, H),
                                    fusedrnn.LSTM(I, H, zoneout=0.1)], ids=["ln_lstm", "indrnn_cell", "lstm_zoneout"])
def test_jit_script_refuses_with_a_reason(module):
    with pytest.raises(RuntimeError, match="torch.jit.script cannot compile"):
        torch.jit.script(module)


#: Layers torch.jit.trace would record as the reference's loop unrolled T times: refused.
UNTRACEABLE = {
    "ln_lstm": lambda: fusedrnn.LayerNormLSTM(I, H),
    "indrnn_tanh": lambda: fusedrnn.IndRNN(I, H),
    "ln_gru_zoneout": lambda: fusedrnn.LayerNormGRU(I, H, zoneout=0.2),
    "lstm_zoneout": lambda: fusedrnn.LSTM(I, H, zoneout=(0.2, 0.0)),
    "gru_zoneout_and_weight_dropout": lambda: fusedrnn.GRU(I, H, zoneout=0.2, weight_dropout=0.1),
}


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("layer_id", UNTRACEABLE)
def test_jit_trace_refuses_what_it_would_record_at_one_length(layer_id, training):
    """A trace would unroll the reference loop at the traced T and keep zoneout's [T, N, H] eval masks, then return
    a [T_traced, N, H] output for any input without an error: refused, as torch.jit.script refuses."""
    module = UNTRACEABLE[layer_id]().train(training)
    with pytest.raises(RuntimeError, match="torch.jit.trace .* cannot record"):
        torch.jit.trace(module, (torch.randn(T, N, I),), check_trace=False)


#: What torch.jit.trace records correctly at every length and batch: (id, module, input shape at trace time).
TRACEABLE = {
    "lstm_weight_dropout": (lambda: fusedrnn.LSTM(I, H, weight_dropout=0.5), (T, N, I)),  # eval: W_hh itself
    "ln_lstm_cell": (lambda: fusedrnn.LayerNormLSTMCell(I, H), (N, I)),  # one step: no loop to unroll
    "indrnn_cell": (lambda: fusedrnn.IndRNNCell(I, H), (N, I)),
}


@pytest.mark.parametrize("case_id", TRACEABLE)
def test_jit_trace_of_what_it_keeps_runs_at_other_shapes(case_id):
    """Traced at one length (and batch), run at others: equal to eager."""
    factory, shape = TRACEABLE[case_id]
    module = factory().double().eval()
    traced = torch.jit.trace(module, (torch.randn(shape, dtype=torch.float64),))
    other = torch.randn(tuple(d + 3 for d in shape[:-1]) + shape[-1:], dtype=torch.float64)
    leaves = torch.utils._pytree.tree_leaves
    for got, want in zip(leaves(traced(other)), leaves(module(other))):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, **TOLERANCES[torch.float64])


@pytest.mark.parametrize("layer_id", ["ln_lstm", "indrnn_tanh"])
def test_export_records_the_reference_path_and_refuses_other_lengths(layer_id):
    """No torch op computes a variant: the exported program holds the reference's plain ops (not aten.lstm & co.),
    unrolled at the exported T, and its shape guard refuses any other T rather than returning the wrong length."""
    cls, kwargs, *_ = LAYERS[layer_id]
    module = cls(I, H, zoneout=0.2, **kwargs).eval()
    x = torch.randn(T, N, I)
    exported = torch.export.export(module, (x,))
    torch.testing.assert_close(exported.module()(x)[0], module(x)[0])
    assert "aten.lstm" not in str(exported.graph) and "aten.rnn_tanh" not in str(exported.graph)
    with pytest.raises(Exception, match=f"Guard failed|{T}"):
        exported.module()(torch.randn(T + 3, N, I))


def test_replace_and_restore_leave_variants_alone():
    model = nn.Sequential(nn.LSTM(I, H), fusedrnn.LayerNormLSTM(H, H), fusedrnn.IndRNN(H, H))
    fusedrnn.replace_rnns(model, keep_type=False)
    assert [type(m) for m in model] == [fusedrnn.LSTM, fusedrnn.LayerNormLSTM, fusedrnn.IndRNN]
    fusedrnn.restore_rnns(model)
    assert [type(m) for m in model] == [nn.LSTM, fusedrnn.LayerNormLSTM, fusedrnn.IndRNN]
    regularised = nn.Sequential(fusedrnn.GRU(I, H), fusedrnn.LSTM(I, H, weight_dropout=0.1))
    with pytest.raises(ValueError, match="cannot restore"):
        fusedrnn.restore_rnns(regularised)
    assert type(regularised[0]) is fusedrnn.GRU  # nothing changed


def test_fullgraph_compile_of_a_regularised_variant():
    """torch.compile traces a variant, its zoneout masks and W_hh dropout without graph breaks; with aot_eager the
    seeded masks are torch's eager draws, so the run equals the eager one, gradients included."""
    torch.manual_seed(0)
    module = fusedrnn.LayerNormLSTM(I, H, num_layers=2, zoneout=(0.3, 0.2), weight_dropout=0.3, dtype=torch.float64)
    x = torch.randn(T, N, I, dtype=torch.float64)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    results = []
    for run in (module, compiled):
        torch.manual_seed(3)
        y, (h, c) = run(x)
        results.append([y, h, c, *torch.autograd.grad((y * y).sum() + h.sum() + c.sum(), list(module.parameters()))])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **TOLERANCES[torch.float64])


def double_backward_cases():
    for layer_id, (_, _, _, _, mode, layer_norm) in LAYERS.items():
        for param in backend_params(mode, layer_norm, True):
            if param.values[0] != "reference":  # the baseline
                yield pytest.param(layer_id, *param.values, marks=param.marks, id=f"{layer_id}-{param.id}")


@pytest.mark.parametrize("layer_id, backend, dtype", list(double_backward_cases()))
def test_double_backward_matches_the_reference(layer_id, backend, dtype):
    """Gradients of gradients, with zoneout masks and layer norm in the graph, equal the reference backend's.

    What this checks for a fused backend: its forward and the wiring of its ops' differentiable backward. Under
    create_graph=True that backward is fusedrnn.reference.layer_vjp (fusedrnn/autograd_paths.py), never the kernels'
    own, so this passes for any kernel backward; test_dropin.py's
    test_create_graph_first_order_gradients_equal_the_kernel_backward ties the two. float32 (triton): against the
    reference in float64, at most ERROR_RATIO times the reference's own float32 error (or within the float32 tolerance
    relative to the largest value)."""
    cls, kwargs, *_ = LAYERS[layer_id]
    torch.manual_seed(0)
    modules = [cls(I, H, bidirectional=True, zoneout=0.3, dtype=dtype, backend=name, **kwargs)
               for name in (backend, "reference")]  # fmt: skip
    modules[1].load_state_dict(modules[0].state_dict())
    runs = [(modules[0], dtype), (modules[1], dtype)]
    if dtype != torch.float64:
        runs.append((copy.deepcopy(modules[1]).double(), torch.float64))
    x = torch.randn(T, N, I, dtype=torch.float64)
    results = []
    for module, run_dtype in runs:
        leaves = [x.to(run_dtype).requires_grad_(), *module.parameters()]
        torch.manual_seed(4)  # the same zoneout masks (float64 draws equal float32's)
        y, _ = module(leaves[0])
        grads = torch.autograd.grad((y * y).sum(), leaves, create_graph=True)
        second = torch.autograd.grad(sum((g * g).sum() for g in grads), leaves)
        results.append({f"grad[{i}]": g for i, g in enumerate(second)})
    if dtype == torch.float64:
        assert_all_close(*results, dtype)
    else:
        assert_as_close_to_float64(*results, dtype, relative_floor=True)
