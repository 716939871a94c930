"""Evaluation of face features and attribute predictions: LFW, MegaFace, BLUFR, attributes.

Entry points (pure functions on arrays; the CLIs in ``tools/`` read and write files):

* ``lfw.evaluate_lfw(features, names, pairs_path, rule=, missing=, view1=)``
* ``megaface.evaluate_megaface(probes, probe_ids, distractors, sizes, ...)``
* ``blufr.evaluate_blufr(features, names, config_path)``
* ``attributes.attribute_accuracy(scores, labels, names)``
* ``features_io.load_features(prefix)``, ``read_bin``/``write_bin`` (MegaFace devkit)
"""
