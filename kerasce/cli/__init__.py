"""kerasce's command lines: what a user runs, kept apart from the library they call.

* ``python -m kerasce.cli.reinforce``: train the REINFORCE agent on a gymnasium env and export it
  (:mod:`kerasce.cli.reinforce`; ``python examples/reinforce_cartpole.py`` runs the same command);
* ``python -m kerasce.cli.classify``: train an image classifier on a dataset and export it
  (:mod:`kerasce.cli.classify`);
* :mod:`kerasce.cli.runs`: what the command lines share (flag checks, a quiet TensorFlow start, resumable
  runs and their backups);
* :mod:`kerasce.cli.errors`: a failed run-time check of a loss as the first line the user reads;
* :mod:`kerasce.cli.logs`: the per-epoch ``training_log.csv`` of a run.

The library modules (``kerasce.losses``, ``kerasce.classifiers``, ``kerasce.rl``, ...) never import this
package. Importing it imports no TensorFlow: a command line parses and checks its flags first.
"""
