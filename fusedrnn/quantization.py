"""`quantize_dynamic`: torch's dynamic quantization, with fusedrnn's layers treated as their torch.nn namesakes.

`torch.ao.quantization.quantize_dynamic` picks the layers it quantizes by exact class (`nn.LSTM`, `nn.GRU`,
`nn.LSTMCell`, ...; `type(module) in qconfig_spec`), and its quantized classes convert only those exact classes, so it
leaves fusedrnn's layers float, silently (layers that `replace_rnns` left in torch.nn's class, its default, it sees and
quantizes as torch.nn's). This function turns them into their torch.nn classes (`restore_rnns`),
lets torch quantize, and turns the layers torch left float (e.g. `RNN`, or a class missing from `qconfig_spec`) back
into fusedrnn's, on the backend each had. The quantized layers are torch's own (`torch.ao.nn.quantized.dynamic`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from .replace import ORIGINALS, is_routed, refuse_heads, refuse_regularised, replace_rnns, restore_rnns


def _torch_spec(qconfig_spec):
    """`qconfig_spec` (None, a set or a dict of classes and module names) with fusedrnn classes replaced by their
    torch.nn originals."""
    if qconfig_spec is None:
        return None
    if isinstance(qconfig_spec, dict):
        return {ORIGINALS.get(key, key): value for key, value in qconfig_spec.items()}
    return {ORIGINALS.get(key, key) for key in qconfig_spec}


def quantize_dynamic(model: nn.Module, qconfig_spec=None, dtype=torch.qint8, mapping=None, inplace: bool = False):
    """Same arguments and result as `torch.ao.quantization.quantize_dynamic`; fusedrnn's LSTM, GRU, LSTMCell, GRUCell
    and RNNCell are quantized exactly where torch.nn's would be. A fusedrnn class in `qconfig_spec` stands for its
    torch.nn class. Returns the quantized model (a copy unless `inplace`). ValueError, and the model unchanged, if a
    fusedrnn layer uses zoneout or weight_dropout (torch's quantized layers have neither)."""
    try:
        from torch.ao.quantization import quantize_dynamic as torch_quantize_dynamic
    except ImportError as error:  # torch has announced the removal of torch.ao.quantization in favour of torchao
        raise ImportError(f"this torch has no torch.ao.quantization.quantize_dynamic: {error}") from error
    refuse_regularised(model, "quantize {} with zoneout or weight_dropout: torch's quantized layers have neither")
    refuse_heads(model, "quantize {} with num_heads > 1: torch's quantized layers have no heads")
    if not inplace:
        model = copy.deepcopy(model)
    # (layer, its backend, whether it kept its torch.nn class: replace_rnns' keep_type mode)
    fused = [
        (module, module.backend, is_routed(module))
        for module in model.modules()
        if type_before_parametrizations(module) in ORIGINALS or is_routed(module)
    ]
    restore_rnns(model)
    try:
        model = torch_quantize_dynamic(model, _torch_spec(qconfig_spec), dtype=dtype, mapping=mapping, inplace=True)
    except Exception:  # e.g. a bad spec: the user's model (modified in place when inplace) keeps fusedrnn's layers
        for module, backend, keep_type in fused:
            replace_rnns(module, backend, keep_type=keep_type)
        raise
    still_here = {id(module) for module in model.modules()}
    for module, backend, keep_type in fused:
        if id(module) in still_here:  # left float by torch: on fusedrnn again, as it was
            replace_rnns(module, backend, keep_type=keep_type)
    return model
