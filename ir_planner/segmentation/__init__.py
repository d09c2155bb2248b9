"""Classic automatic segmentation, lesion from a seed point, editing."""
