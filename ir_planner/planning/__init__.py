"""Trajectory metrics, automatic path search, ablation devices, zones and coverage.

Imports neither VTK nor Qt (enforced by import-linter).
"""
