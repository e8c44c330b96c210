"""Judging and showing detections.

``voc_eval`` (VOC mAP exactly as the devkit computes it), ``eval_plots`` (per-class AP and
precision-recall figures of its result) and ``visualize`` (images with boxes, training curves).
Nothing here imports ``data_utils.training``.  Import the module you need
(``from data_utils.evaluation.voc_eval import evaluate_detections``): this file re-exports nothing.
"""
