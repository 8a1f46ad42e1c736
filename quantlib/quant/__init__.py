"""Small composable quantizer objects and the arithmetic behind them."""

from quantlib.quant.activation import ActivationQuantizer
from quantlib.quant.functional import ARQFunction, IntRange, ULQFunction, arq_quantize, ulq_scale_offset
from quantlib.quant.ifmr import Clips, ifmr_search
from quantlib.quant.weight import WeightQuantizer

__all__ = [
    "ARQFunction",
    "ActivationQuantizer",
    "Clips",
    "IntRange",
    "ULQFunction",
    "WeightQuantizer",
    "arq_quantize",
    "ifmr_search",
    "ulq_scale_offset",
]
