"""The emulated bench: the SCPI engine, command trees as data, the emulated instruments over a solve of
the circuit, and the firmware bridge (:mod:`hil.emulator.bench` builds and serves one).
"""
