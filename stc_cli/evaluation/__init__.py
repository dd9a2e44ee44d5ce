"""The eval loop: ``evaluate.py`` (an EvalConfig -> protocol, queries, model -> a run), ``runner.py`` (queries
-> records in a run folder, stream or clip schedule), ``run_folder.py`` (what may be written where, resume,
retry, the lock) and ``distributed.py`` (one share per torchrun process, merged by rank 0)."""
