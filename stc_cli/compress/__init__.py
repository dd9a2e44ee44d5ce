"""STC token compression, plug-and-play: the ViT-side cacher and the pre-prefill pruner; and the
baselines it is compared with, in the same two places: ToMe inside the ViT; VidCom² (the pruner's
ancestor), VisionZip and TimeChat-Online's differential token drop before the prefill."""

from stc_cli.compress.cacher import STCCacher
from stc_cli.compress.dtd import DifferentialTokenDrop
from stc_cli.compress.pruner import STCPruner
from stc_cli.compress.tome import ToMe
from stc_cli.compress.vidcom2 import VidCom2
from stc_cli.compress.visionzip import VisionZip

__all__ = ["DifferentialTokenDrop", "STCCacher", "STCPruner", "ToMe", "VidCom2", "VisionZip"]
