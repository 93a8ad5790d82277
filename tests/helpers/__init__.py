"""What several test modules share, in one place.

* :mod:`helpers.references`: float64 NumPy references written from the docstrings' formulas (softmax,
  log-sum-exp, sigmoid, smoothed targets), the independent side of the tests' comparisons;
* :mod:`helpers.zygote`: fresh Python processes forked from one that has imported TensorFlow (the
  ``zygote`` fixture of tests/conftest.py); :mod:`helpers.kerasce_free`: such a process that cannot import
  kerasce, to check that an export needs TensorFlow only;
* :mod:`helpers.jobs`: tests that run training in processes of their own (a CPU split into devices, a
  multi-worker cluster): the job's side (one fit recorded as losses and weights) and the test's side (the
  job's JSON result, the comparison of two trainings).

A cluster's ``TF_CONFIG`` values come from the library itself: ``kerasce.launch.tf_configs``.
tests/ is on ``sys.path`` (pytest's rootdir conftest), so test modules write ``from helpers.jobs import ...``;
a job script run from tests/ finds it as its own directory's package.
"""
