"""Imported first by the benchmark scripts: benchmarks/envs.py is named like the `envs` package,
so a script's own folder (first on sys.path) would shadow it. Put the repository root first."""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))
