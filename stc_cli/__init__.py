"""stc: evaluate streaming video LLMs with STC token compression."""

__version__ = "0.1.0"
