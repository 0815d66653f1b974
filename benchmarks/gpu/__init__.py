"""The GPU suite of issue 15 (``benchmarks/gpu_suite.sh``): in-process torch, Triton-served,
Grad-CAM and training on one card, with a ``--dry-run`` on the CPU that CI runs."""
