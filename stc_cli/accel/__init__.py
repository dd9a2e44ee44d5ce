"""Making the models' steps cheaper to launch on a GPU, for the stock and the STC side alike, and counting
what they launch."""

from stc_cli.accel.compiled_layers import compile_layers
from stc_cli.accel.graphs import GraphReplay
from stc_cli.accel.op_census import OpCensus
from stc_cli.accel.static_stream import StaticStream
from stc_cli.accel.tower_graphs import TowerGraphs

__all__ = ["GraphReplay", "OpCensus", "StaticStream", "TowerGraphs", "compile_layers"]
