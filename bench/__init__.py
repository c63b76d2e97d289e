"""meteorpi's benchmark: ours side by side with a baseline, in one run, on one machine.

Speed is judged by the figures this package prints (``python -m bench``), never by timed test
assertions: a figure is the median of pairwise ratios of ours and its baseline run
alternately, so drifting machine load hits both sides of every pair alike. See
``bench/results.md`` for the last full run and ``python -m bench --help`` for the options.
"""
