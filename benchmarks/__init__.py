"""Side-by-side measurements; each module writes benchmarks/results/<name>.json and .png."""
