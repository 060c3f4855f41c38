"""rnb.report: tables and figures of finished (and unfinished) runs.

``rnb-report`` (:func:`rnb.report.build.write_report`) and ``notebooks/analyze_runs.ipynb``
use the same public functions: :mod:`~rnb.report.runs` (find runs), :mod:`~rnb.report.groups`
(which runs are averaged), :mod:`~rnb.report.tables`, :mod:`~rnb.report.plots`,
:mod:`~rnb.report.ksweep`, :mod:`~rnb.report.clusters`; :mod:`~rnb.report.aggregate` is the
older one-frame view. Nothing is imported here, so ``import rnb.report.markdown`` stays light.
"""
