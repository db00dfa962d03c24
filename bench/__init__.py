"""Benchmark for django-durable: see bench/README.md."""
