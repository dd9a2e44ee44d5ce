"""STC token compression, plug-and-play: the ViT-side cacher and the pre-prefill pruner; and the
baselines it is compared with (VidCom², the pruner's ancestor)."""

from stc_cli.compress.cacher import STCCacher
from stc_cli.compress.dtd import DifferentialTokenDrop
from stc_cli.compress.pruner import STCPruner
from stc_cli.compress.vidcom2 import VidCom2

__all__ = ["DifferentialTokenDrop", "STCCacher", "STCPruner", "VidCom2"]
