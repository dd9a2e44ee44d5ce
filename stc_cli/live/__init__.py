"""Live mode, ``stc stream SOURCE``: frames go into a model's memory as they arrive, questions are
answered from the memory at that moment, and the loop measures whether the model keeps up.

One idea per module:

- ``source.py``: opening a file, an ``http(s)://`` or ``rtsp://`` URL or a camera with PyAV; the frames
  taken at ``--fps`` by their presentation time.
- ``reconnect.py``: a network source or camera opened again after a drop, its frames on the stream's
  timeline.
- ``feed.py``: a reader thread, and when each frame arrives: a file at ``--speed`` times real time
  (or, at ``--speed 0``, when the model is ready for it), a live source when it is read.
- ``questions.py``: ``--ask`` text, ``--questions`` files and stdin lines as questions, and the
  ``Query`` each becomes.
- ``loop.py``: the stream loop: frames into the model (dropping or queueing those that wait), questions
  answered in stream order, lag measured.
- ``stats.py``: what the loop counts, and the ``summary`` it ends with.
- ``display.py``: JSON-lines events, plain lines, or the rich panel on a terminal.
- ``memory.py``: the bytes a model holds for the stream, and the process's resident memory.
- ``session.py``: a ``StreamConfig`` -> protocol, model, source, questions, display -> the loop.
"""
