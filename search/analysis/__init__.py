"""What a study says about batch size, in numbers and in plain words: one concept per module.

Pure functions of the study's trials (no plotting, no I/O, no torch), so `search.report` only
renders them and tests can check them on trials built by hand. Every claim is sized to the
evidence: a batch size with one completed trial is one draw of learning rate and momentum, not
an optimum, and the summary says so instead of drawing a trend through noise.

  trials          the search space's batch sizes, "within x% of the best"
  per_batch_size  the best each batch size reached, and the batch sizes near the best
  scaling         how the best learning rate scales with batch size (a power-law fit)
  pruning         the compute pruning saved
  evaluation      test-set runs of `search.evaluate`, grouped per configuration
  speeds          the two speeds: best loss by examples seen and by training seconds
  frontier        a frontier study's rows, paired comparisons and recommendation
  critical        the critical batch size: measured through the efficiency curve, predicted from B_simple
  diagnostics     the noise-scale probe, lr-relative sharpness, weight norm and generalization gap
  schedules       decay the learning rate or grow the batch
  summary         the plain-language summary
  wording         how numbers read in sentences
"""
