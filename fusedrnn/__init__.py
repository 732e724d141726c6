"""fusedrnn: fused-kernel LSTM / GRU / Elman RNN layers for PyTorch, drop-in replacements for torch.nn's, and the
variants torch.nn lacks (layer-norm LSTM/GRU, IndRNN, zoneout, DropConnect, xLSTM's sLSTM)."""

from .cells import GRUCell, LSTMCell, RNNCell
from .haste import from_haste, load_haste_state_dict
from .memory import empty_cache
from .modules import GRU, LSTM, RNN
from .quantization import quantize_dynamic
from .registry import BackendError, available_backends, get_backend
from .replace import replace_rnns, restore_rnns
from .replace_slstm import replace_slstm, restore_slstm
from .slstm import sLSTM, sLSTMCell
from .variants import IndRNN, IndRNNCell, LayerNormGRU, LayerNormGRUCell, LayerNormLSTM, LayerNormLSTMCell

__version__ = "0.1.0"
__all__ = [
    "LSTM",
    "GRU",
    "RNN",
    "LSTMCell",
    "GRUCell",
    "RNNCell",
    "LayerNormLSTM",
    "LayerNormGRU",
    "IndRNN",
    "LayerNormLSTMCell",
    "LayerNormGRUCell",
    "IndRNNCell",
    "sLSTM",
    "sLSTMCell",
    "from_haste",
    "load_haste_state_dict",
    "replace_rnns",
    "restore_rnns",
    "replace_slstm",
    "restore_slstm",
    "quantize_dynamic",
    "available_backends",
    "get_backend",
    "BackendError",
    "empty_cache",
]
