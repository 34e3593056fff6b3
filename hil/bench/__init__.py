"""The bench substrate: its lifecycle and safety (:mod:`hil.bench.substrate`), probes and the run's record.

It drives the instruments through :mod:`hil.drivers` and imports nothing from :mod:`hil.emulator`.
"""
