"""Stream processors: cleaning, enrichment, stop/trip segmentation and retention tagging.

Pure logic in :mod:`processors.pipeline` and the modules it drives; the faust wiring in
:mod:`processors.app`; the offline ``geostream segment`` command in :mod:`processors.offline`.
"""
