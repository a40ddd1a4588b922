"""Test-session settings shared by every test module."""

import torch

# One intra-op thread: the suite's tensors are small, and on a loaded 2-core machine OpenMP threads that spin
# against each other (or against another process) slow small ops down by an order of magnitude. Timings are
# never asserted in tests; speed lives in bench/.
torch.set_num_threads(1)
