"""Exports: report, Slicer markups, DICOM objects, web 3D."""
