"""Instrument drivers and the bench emulator (installed as ``hil.drivers``)."""
