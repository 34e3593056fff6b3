"""ngspice: the session (libngspice through PySpice), netlist building, the substrate."""
