"""STC token compression, plug-and-play: the ViT-side cacher and the pre-prefill pruner."""

from stc_cli.compress.cacher import STCCacher
from stc_cli.compress.pruner import STCPruner

__all__ = ["STCCacher", "STCPruner"]
