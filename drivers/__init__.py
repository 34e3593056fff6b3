"""The instrument drivers a bench uses, over pyvisa (installed as ``hil.drivers``).

The bench substrate that drives them is :mod:`hil.bench`; the emulated instruments are :mod:`hil.emulator`.
"""
