"""Benchmarks: each method runs in its own subprocess; results are ratios measured side by side."""
