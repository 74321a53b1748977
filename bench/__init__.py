"""pgqueue's benchmark suite: ``python -m bench`` prints JSON (see docs/performance.md)."""
