"""The datasets and how batches reach the model.

``voc`` (PASCAL VOC 2007 at 224x224: letterbox, flips, normalisation), ``download`` (fetching and
verifying VOC 2007), ``synthetic`` (the embedded offline dataset), ``cache`` (a split decoded once
into a uint8 tensor file) and ``loaders`` (the DataLoader factory over either).  Nothing here imports
``data_utils.training`` or ``data_utils.evaluation``.  Import the module you need
(``from data_utils.data.voc import VOCDetection``): this file re-exports nothing.
"""
