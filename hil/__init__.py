"""hil: physical learning in electrical circuits, on an ideal model, ngspice and a real bench.

Data flows one way: circuit (:mod:`hil.circuit`) -> substrate
(:mod:`hil.substrate`, :mod:`hil.ideal`) -> measurements -> rule
(:mod:`hil.rules`) -> update -> substrate, driven by :mod:`hil.train`.
"""

from hil import circuits
from hil.circuit import Circuit, CircuitError, load_circuit

__all__ = ["Circuit", "CircuitError", "load_circuit", "circuits"]
__version__ = "0.1.0"
