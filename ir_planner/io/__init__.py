"""Readers and writers: DICOM, NIfTI/NRRD/MHA, segmentations → core types."""
