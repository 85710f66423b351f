"""The default recipe's numbers for batch size, epochs and large-batch lr scaling: here, free of torch, so that the run
parameters' descriptions (cnn/params.py) name the same values the rules in cnn/recipe.py use."""

from __future__ import annotations

MIN_STEPS_PER_EPOCH = 50  # the batch rule never leaves an epoch with fewer optimizer steps than this ...
# ... nor the whole run with fewer than this: with too few steps in the run, small and deep variants end well below the
# reference loop at any lr (docs/recipe.md, "Where the constants come from"). The per-epoch floor alone binds on larger
# sets.
MIN_TOTAL_STEPS = 1_000
AUTO_BATCH_BOUNDS = {"cpu": (8, 128), "cuda": (8, 512)}  # powers of two; other devices use the CPU bounds
EPOCH_IMAGES = 20_000  # the epoch rule trains on at least this many images ...
AUTO_EPOCH_BOUNDS = (5, 30)  # ... within these bounds
# Above this batch (the largest the CPU rule picks, the batch BASE_LR and LR_TRUST are set for) both grow linearly with
# the batch, with one-cycle's first 30% as the warm-up (Goyal et al. 2017), for Adam too: the square-root rule (Malladi
# et al. 2022) loses more accuracy at large batches (docs/recipe.md; benchmarks/large_batch.py measures the linear one).
# Above it the lr is the scaled base lr whatever the range test suggests: a range test at a large batch has a short curve
# whose suggestion trains some variants far below batch 64 (docs/recipe.md, "Where the constants come from").
LR_SCALE_FROM_BATCH = 128
