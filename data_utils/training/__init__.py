"""Training a detector and running it.

``engine`` (the training loop and the one checkpoint format), ``head_init`` (the heads' initialisation
for a randomly initialised backbone), ``inference`` (batched detections over a dataset, VOC result
files) and ``experiment`` (train, evaluate and report one preset with a model it is given).  Import
the module you need (``from data_utils.training.engine import train_detector``): this file re-exports
nothing.
"""
