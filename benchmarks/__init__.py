"""Performance benchmarks of the toolkit: speed, throughput and memory (the research studies are in ``studies/``).

Run each from the repository root as a module, ``python3 -m benchmarks.<name>`` (or anywhere after
``pip install -e .``). ``python3 benchmarks/<name>.py`` works too: a script run by its path re-runs
itself as the module, so no script edits the import path.
"""
