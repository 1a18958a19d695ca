"""Water segmenters over the analysis-ready stack: the interface, TerraMind, the spectral baseline, training.

What lives here (one concept per module):

* ``segmenter``: the :class:`~models.segmenter.Segmenter` protocol (``predict`` and the streaming
  ``iter_probability_rows``), the row-source protocol ``WindowSource`` and ``ArraySource``, the
  stack band order. Torch-free leaf.
* ``hub``: ``HubCache``, where ``hf://`` specs are looked up (cache folder, offline flag), filled
  in at the edge. Torch-free leaf.
* ``runtime``: ``InferenceRuntime``, which backend runs a TerraMind forward (ONNX Runtime or
  torch) and where exported graphs are cached, filled in at the edge. Torch-free leaf.
* ``normalisation``: per-band statistics and the CryoSentinel input protocol. Torch-free leaf.
* ``baseline``: the spectral baseline segmenter. Torch-free.
* ``registry``: model spec string → ``Segmenter`` (``default``, ``baseline``, path, ``hf://``).
  Torch-free at import; imports ``checkpoint`` and ``inference`` inside a function, only
  for TerraMind specs.
* ``terramind``: the TerraMind module tree (terratorch). Needs torch.
* ``checkpoint``: finding, strictly loading and writing checkpoints. Needs torch.
* ``inference``: sliding-window inference and ``TerraMindSegmenter``. Needs torch.
* ``onnx_runtime``: the model exported to ONNX once (cached) and run by ONNX Runtime. Needs
  torch and onnxruntime; imported by ``inference`` only where ONNX Runtime is chosen.
* ``train``: fine-tuning. Needs torch.

What it may import: the standard library, numpy/scipy/torch/terratorch/huggingface_hub/raster
libraries, and ``core`` (errors, atomic files). Never ``tasks``, ``db`` or ``flows``: they call
models, not the other way round. Nothing here reads environment variables.

IMPORT GRAPH SYNC CONTRACT: the graph below is every import between modules of the package
(top-level and in-function imports alike; an arrow reads "imports"). It has no cycle. An import
added or removed inside ``models/`` changes this drawing in the same change;
``tests/unit/test_models_package.py`` compares the two and looks for cycles::

    registry     -> baseline, hub, runtime, segmenter, (lazily, TerraMind specs only) checkpoint, inference
    train        -> checkpoint, hub, inference, normalisation, terramind
    inference    -> checkpoint, normalisation, runtime, segmenter, terramind, (lazily) onnx_runtime
    onnx_runtime -> checkpoint, runtime, terramind
    checkpoint   -> hub, normalisation, terramind
    baseline     -> segmenter
    segmenter, hub, normalisation, runtime, terramind -> (nothing in models)
"""
