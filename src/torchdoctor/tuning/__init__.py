"""Engine-knob trials: ``torchdoctor tune SCRIPT`` (``runner.tune_script``) and
``torchdoctor.tune(step_fn, ...)`` (``api.tune``).

Layout: ``knobs.py`` (the one table of knobs: add a knob there), ``harness.py`` (one trial, in
its own process), ``steps.py`` (step boundaries, clean stop), ``trial.py`` (starting a trial
process), ``plan.py`` (fitting the budget), ``stats.py`` and ``evaluate.py`` (speedups, drift,
verdicts), ``runner.py`` (the interleaved schedule), ``session.py`` (the Session, merging into
a run session), ``api.py`` (in-process trials of a step function).
"""
