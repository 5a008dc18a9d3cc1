"""What meta-learning learns, side by side with ordinary training (``metarl analyze``).

:func:`~metarl.analysis.report.analyze` draws and measures; :mod:`~metarl.analysis.numbers`
holds the measures (linear CKA, probes, silhouette), :mod:`~metarl.analysis.figures` the
figures and :mod:`~metarl.analysis.models` turns runs into models to study.
"""
