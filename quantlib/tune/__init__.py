"""Automatic tuning: the seed's manual "Tuning Workflow" run for the user.

``run_qat`` calls :func:`run_tuned` when ``spec.accuracy`` is set: QAT with the given
or default config; if the target is missed, per-layer sensitivity on the trained model,
then one change at a time (layers left in float, input and output layers first; clips
re-tuned within 0.3..1.7 x the observed range; INT4 weights under a bit budget) until
the target is met or ``max_trials`` runs are spent.
"""

from quantlib.tune.runner import run_tuned

__all__ = ["run_tuned"]
