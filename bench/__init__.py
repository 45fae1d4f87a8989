"""kommunrouter's benchmarks: `python bench/run_all.py` (`make bench`) runs them all; each also runs alone as
`python -m bench.<name>`. See bench/README.md."""

import os

# Set before any benchmark imports torch: OpenMP threads that spin while idle ruin timings on 2 shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
