"""hil: physical learning in electrical circuits, on an ideal model, ngspice and a real bench.

Data flows one way: circuit (:mod:`hil.circuit`) -> substrate
(:mod:`hil.substrate`, :mod:`hil.ideal`) -> measurements -> rule
(:mod:`hil.rules`) -> update -> substrate, driven by :mod:`hil.train`.

The names below are the Python API (:mod:`hil.api`): load or build a circuit, make or
load a task, train, predict. The training loop's module is reached as
``from hil.train import ...`` (``hil.train`` is the function).
"""

from hil import circuits
from hil.api import TrainResult, factorize_task, free_state, predict, train
from hil.circuit import Circuit, CircuitError, load_circuit, make_circuit
from hil.tasks import Task, TaskError, circuit_teacher_task, load_csv_task, teacher_task, write_csv_task

__all__ = ["Circuit", "CircuitError", "load_circuit", "make_circuit", "circuits",
           "Task", "TaskError", "teacher_task", "circuit_teacher_task", "load_csv_task", "write_csv_task",
           "factorize_task", "train", "TrainResult", "predict", "free_state"]
__version__ = "0.1.0"
