"""Benchmarks: each module here has `main(out_dir) -> dict` and writes JSON + Markdown."""
