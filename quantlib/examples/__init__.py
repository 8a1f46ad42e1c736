"""Small, fast, real models and data the tests, the demo and the benchmarks share."""
