"""kerasce's command lines (``python -m kerasce.cli.<name>``): flags, presets, resumable runs, run records.

Not library core: the library (``kerasce.losses``, ``kerasce.rl``, ...) never imports from here.
"""
