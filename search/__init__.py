"""Fixed-budget search of batch size, learning rate and momentum.

The flow, one module per stage: study spec (`spec`) -> search space (`space`) ->
trial (`objective`: data, `training`, `reporting`) -> storage (`storage`) -> results.
"""
