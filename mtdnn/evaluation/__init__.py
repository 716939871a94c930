"""Evaluation of face features and attribute predictions: LFW, MegaFace, BLUFR, attributes.

Entry points (pure functions on arrays; the CLIs in ``tools/`` read and write files):

* ``lfw.evaluate_lfw(features, names, pairs_path, rule=, missing=, view1=, fars=)``
* ``megaface.evaluate_megaface(probes, probe_ids, distractors, sizes, ...)`` and
  ``megaface.evaluate_with_noise_lists(...)`` (as given, the published cleaning, noise removed)
* ``blufr.evaluate_blufr(features, names, config, exclude_people=)``
* ``attributes.attribute_accuracy(scores, labels, names)``
* ``features_io.load_features(prefix)``, ``read_bin``/``write_bin`` (MegaFace devkit files)
* ``plots.plot_roc / plot_cmc / plot_megaface``, ``report.collect_runs / build_report``
* ``cli.run_tool``: how the evaluation tools exit (bad input vs a fault of the machine)
"""
