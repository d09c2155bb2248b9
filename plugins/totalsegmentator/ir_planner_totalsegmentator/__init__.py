"""IR Planner plugin: the ``totalsegmentator`` segmenter (see ``plugin.toml``).

Kept empty: IR Planner reads ``plugin.toml`` from this package without importing the
adapter (:mod:`ir_planner_totalsegmentator.segmenter`) until it is used.
"""
