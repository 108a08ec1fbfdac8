"""Running experiment specs: one spec end to end (``run``), or several trained in lock-step (``lockstep``)."""

from ticketlab.experiment.check import check_spec
from ticketlab.experiment.lockstep import run_experiments
from ticketlab.experiment.run import RunResult, initial_weights, prepare_run, run_experiment

__all__ = ["RunResult", "check_spec", "initial_weights", "prepare_run", "run_experiment", "run_experiments"]
