"""Defaults that more than one module needs, one docstring per constant (Settings' fields default to these)."""

from __future__ import annotations

DIAGNOSTICS_CPU_SHARE = 0.05
"""Share of one core a job's live-figure refreshes may take (Settings.diagnostics_cpu_share): a refresh that cost
c seconds (ArviZ's cost grows with parameters x draws: 0.06 s for eight schools, 0.55 s for 175 parameters x
4000 draws) makes the next one due after max(interval, c / share), e.g. 11 s instead of 5 s for the latter."""

MAX_VALUE_BYTES = 256_000_000
"""Largest single value one log-density evaluation may compute (Settings.max_value_bytes): a param, a define, or
any sub-expression of a define, distribution argument or observe argument (a broadcast, an `@` product, a
gather). `a * b` with `a` of shape (10000, 1) and `b` of shape (1, 10000) is 800 MB and is refused."""

MAX_EVALUATION_BYTES = 1_000_000_000
"""Memory one log-density evaluation may need in all, gradient included (Settings.max_evaluation_bytes): the
data plus service.language.cost.GRADIENT_FACTOR times every value it computes. A worker sampling k chains at once
needs about k times this, so the default fits a 4 GiB worker running a few chains."""

MAX_RESULT_BYTES = 1_000_000_000
"""Draws and sample stats of one job (Settings.max_result_bytes): chains x kept draws x (kept elements + 7
stats) x 8 bytes. 200k params x 400 draws x 4 chains is 2.56 GB and is refused."""

MAX_CHAIN_RESULT_BYTES = 128_000_000
"""Draws and sample stats of one chain (Settings.max_chain_result_bytes): a quarter of Redis' 512 MB limit on one
value, so a chain's results stay far below it however they are stored."""

CHUNK_BYTES = 32 * 1024 * 1024
"""Largest single value chainyard writes to Redis (Settings.chunk_bytes): a chain's draws and a job's files are
lists of chunks of at most this size, so none approaches Redis' 512 MB limit on one value."""

CHECKPOINT_SECONDS = 5.0
"""Least time between two checkpoint writes of a chain (Settings.checkpoint_seconds): the blocks run in between
are written together, as one block file, when it has passed, when the chain stops and (`chainyard run`, not the
service's workers, which drop a finished chain's files once its draws are stored) when it is done. A SIGKILL
loses at most this much of a chain's sampling (plus the block running), which its resume runs again, bit for bit;
a small model's blocks (eight schools runs 2000 iterations in ~15 ms) cost one write per chain instead of one per
block."""
