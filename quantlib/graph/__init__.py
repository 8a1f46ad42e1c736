"""Graph-level work: making exported programs trainable and reading facts off graphs."""

from quantlib.graph.analysis import GraphFacts, analyze_exported, analyze_module
from quantlib.graph.exported import trainable_module

__all__ = ["GraphFacts", "analyze_exported", "analyze_module", "trainable_module"]
