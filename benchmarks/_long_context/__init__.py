"""Family modules of ``bench_long_context.py`` (interface: README.md in this folder)."""
