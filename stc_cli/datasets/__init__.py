"""Benchmark data on disk: ``download.py`` (manifests and the resumable fetch), ``hub.py`` (huggingface_hub
calls and their errors), ``archives.py`` (safe, streaming, all-or-nothing extraction), ``datadir.py``
(where the data lives) and ``check.py`` (whether a benchmark's data is complete)."""
