"""Exact conversions between core types and third-party image types (SimpleITK).

A thin layer between ``core`` and ``io``/``segmentation``/``planning`` so that every
layer above converts the same way, with the convention written once in
:mod:`ir_planner.core.volume`.
"""
