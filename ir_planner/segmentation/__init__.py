"""Classic automatic segmentation, lesion from a seed point, editing, segmenter plugins.

Modules (imported on demand, nothing is loaded here):

* :mod:`~ir_planner.segmentation.auto` – body, bone, lung, airway, bowel gas and
  contrast vessels from CT (body only from MR): ``segment_auto``, ``segment_ct``,
  ``segment_mr``, ``segment_for_planning``.
* :mod:`~ir_planner.segmentation.lesion` – lesion from one click: ``segment_lesion``.
* :mod:`~ir_planner.segmentation.edit` – undoable editing: ``LabelEditor``.
* :mod:`~ir_planner.segmentation.plugins` – the ``Segmenter`` protocol; segmenters
  come from the plugin registry (:mod:`ir_planner.core.plugins`).
* :mod:`~ir_planner.segmentation.synthetic` – synthetic lesions of known shape.

This package imports only :mod:`ir_planner.core` (not io or planning: same layer).
"""
