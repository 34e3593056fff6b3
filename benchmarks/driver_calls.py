"""Every public member of a third-party instrument driver, called against the emulated bench, counted.

    python benchmarks/driver_calls.py [-v]      (-v: name every call that is not right)

For PyMeasure's Keithley2400 and Keithley2700 (net16's emulated bench, ideal substrate) and its
Keithley2450 (a bench of 2450s), and QCoDeS's Keithley2400, Keithley2000 (on the 2700) and
Keithley2450 when QCoDeS is installed: each property or parameter read; each settable property set to what it read
and read again; each method whose parameters all have defaults called. A call is

- right: it returned, the instrument queued no error, a round trip read back what was set;
  (before each call: *RST, then a few readings into the instrument's buffer, so that its statistics exist)
- wrong: a round trip read back something else;
- error: the driver raised or the instrument queued an error;
- hang: the driver timed out waiting for a reply.

Members that need arguments, and the generic message calls (write, ask, ...), are not called.
Prints one line per driver; run it with another checkout's Python to compare emulators.
"""

from __future__ import annotations

import inspect
import socket
import warnings

warnings.filterwarnings("ignore")

GENERIC = {"write", "read", "ask", "values", "binary_values", "write_bytes", "read_bytes", "write_binary_values",
           "wait_for", "check_errors", "check_get_errors", "check_set_errors", "shutdown", "clear", "adapter",
           "read_binary_values", "triad", "beep", "ramp_to_current", "ramp_to_voltage", "wait_for_buffer",
           "stop_buffer", "open_all_channels"}


def _errors(port) -> list:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        f = s.makefile("rwb")
        out = []
        for _ in range(20):
            f.write(b"SYST:ERR?\n")
            f.flush()
            line = f.readline().decode().strip()
            if line.startswith("0,") or line.startswith("+0,"):
                return out
            out.append(line)
        return out


def count(driver_cls, emu, name, prepare="") -> dict:
    from pyvisa.errors import VisaIOError
    port = emu.servers[name][1]
    d = driver_cls(emu.resource(name), visa_library="@py", read_termination="\n", write_termination="\n",
                   timeout=700)
    if prepare:
        d.write(prepare)      # readings in the buffer, so that its statistics and data exist
        _errors(port)
    tally = {"right": 0, "wrong": 0, "error": 0, "hang": 0, "not called": 0}
    tally["which"] = []   # (member, outcome) of every call not right
    last_errors = []

    def run(fn):
        d.write("*RST;*CLS;" + prepare)    # each call from the same state, with readings in the buffer
        _errors(port)
        try:
            value = fn()
        except VisaIOError as exc:
            if "TMO" in str(exc) or "Timeout" in str(exc):
                return "hang", None
            return "error", None
        except LookupError:           # a PyMeasure setting read: not a call the driver offers
            return "not called", None
        except Exception:
            return "error", None
        errs = _errors(port)
        last_errors[:] = errs
        return ("error" if errs else "right"), value

    for attr in sorted(a for a in dir(driver_cls) if not a.startswith("_") and a not in GENERIC):
        member = inspect.getattr_static(driver_cls, attr)
        if isinstance(member, property):
            if member.fget is None:
                tally["not called"] += 1
                continue
            outcome, value = run(lambda: getattr(d, attr))
            tally[outcome] += 1
            if outcome != "right":
                tally["which"].append((attr, outcome + (f" {last_errors[0][:50]}" if outcome == "error" and last_errors else "")))
            if outcome == "right" and member.fset is not None and value is not None:
                try:   # a PyMeasure measurement's setter refuses at once: it is not a set call
                    setattr(d, attr, value)
                    outcome = "error" if _errors(port) else "right"
                except LookupError:
                    continue
                except VisaIOError as exc:
                    outcome = "hang" if ("TMO" in str(exc) or "Timeout" in str(exc)) else "error"
                except Exception:
                    outcome = "error"
                if outcome == "right":
                    outcome, again = run(lambda: getattr(d, attr))
                    if outcome == "right" and again != value:
                        outcome = "wrong"
                tally[outcome] += 1
                if outcome != "right":
                    tally["which"].append((attr + " =", outcome))
        elif callable(member):
            params = [p for p in inspect.signature(getattr(d, attr)).parameters.values()
                      if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            if params:
                tally["not called"] += 1
                continue
            outcome, _ = run(getattr(d, attr))
            tally[outcome] += 1
            if outcome != "right":
                tally["which"].append((attr + "()", outcome + (f" {last_errors[0][:50]}" if outcome == "error" and last_errors else "")))
    d.adapter.close()
    return tally


def count_qcodes(driver_cls, emu, name, prepare="") -> dict:
    """The same for a QCoDeS driver: every gettable parameter of it and its submodules read, each
    settable one set to what it read and read again."""
    port = emu.servers[name][1]
    tally = {"right": 0, "wrong": 0, "error": 0, "hang": 0, "not called": 0, "which": []}
    try:
        d = driver_cls(f"q{name}{id(emu)}", emu.resource(name), visalib="@py", timeout=0.7)
    except Exception as exc:
        tally["hang" if "TMO" in str(exc) or "imeout" in str(exc) else "error"] += 1
        tally["which"].append(("(construction)", type(exc).__name__))
        return tally
    params = [(n, p) for n, p in d.parameters.items() if n != "IDN"]
    for sub_name, sub in d.submodules.items():
        params += [(f"{sub_name}.{n}", p) for n, p in getattr(sub, "parameters", {}).items()]

    def run(fn):
        d.write("*RST;*CLS;" + prepare)
        _errors(port)
        try:
            value = fn()
        except Exception as exc:
            return ("hang" if "TMO" in str(exc) or "imeout" in str(exc) else "error"), None
        return ("error" if _errors(port) else "right"), value

    for path, p in params:
        if not p.gettable or p.get_latest.get_timestamp() is None and p.gettable is False:
            tally["not called"] += 1
            continue
        outcome, value = run(p.get)
        tally[outcome] += 1
        if outcome != "right":
            tally["which"].append((path, outcome))
        if outcome == "right" and p.settable and value is not None:
            outcome, _ = run(lambda: p.set(value))
            if outcome == "right":
                again = p.get()
                outcome = "right" if again == value else "wrong"
            tally[outcome] += 1
            if outcome != "right":
                tally["which"].append((path + " =", outcome))
    d.close()
    return tally


def main(verbose=False):
    from pymeasure.instruments.keithley import Keithley2400, Keithley2450, Keithley2700

    from hil.circuit import load_circuit
    from hil.ideal import IdealSubstrate
    try:
        from hil.emulator.bench import build
    except ImportError:   # a checkout from before drivers/ was split (to compare emulators)
        from hil.drivers.emulator import build
    c = load_circuit("net16")
    try:
        import logging
        logging.disable(logging.CRITICAL)
        from qcodes.instrument_drivers.Keithley import Keithley2000 as Q2000
        from qcodes.instrument_drivers.Keithley import Keithley2400 as Q2400
        from qcodes.instrument_drivers.Keithley import Keithley2450 as Q2450
    except ImportError:
        Q2000 = Q2400 = Q2450 = None
    table = [
        ("PyMeasure Keithley2400", count, Keithley2400, "smu_n1", {},
         ":SENS:CURR:PROT 0.05;:SOUR:VOLT 0.3;:OUTP ON;:TRAC:POIN 3;:TRAC:FEED SENS;:TRAC:FEED:CONT NEXT;"
         ":TRIG:COUN 3;:INIT;:TRIG:COUN 1"),
        ("PyMeasure Keithley2700", count, Keithley2700, "scanner", {},
         "TRAC:FEED:CONT NEXT;SAMP:COUN 3;INIT;SAMP:COUN 1"),
        ("PyMeasure Keithley2450", count, Keithley2450, "smu_n1", {"smu_model": "2450"},
         ':SOUR:VOLT:ILIM 0.05;:SOUR:VOLT 0.3;:OUTP ON;:TRIG:LOAD "SimpleLoop", 3;:INIT'),
        ("QCoDeS Keithley2400", count_qcodes, Q2400, "smu_n1", {}, ":SENS:CURR:PROT 0.05;:SOUR:VOLT 0.3;:OUTP ON"),
        ("QCoDeS Keithley2000 (2700)", count_qcodes, Q2000, "scanner", {}, "ROUT:CLOS (@101)"),
        ("QCoDeS Keithley2450", count_qcodes, Q2450, "smu_n1", {"smu_model": "2450"},
         ":SOUR:VOLT:ILIM 0.05;:OUTP ON")]
    rows = []
    for label, counter, cls, name, kw, prep in table:
        if cls is None:
            continue
        try:
            emu = build(IdealSubstrate(c), **kw).start()
        except TypeError:   # an emulator without that instrument
            rows.append((label, None))
            continue
        try:
            rows.append((label, counter(cls, emu, name, prep)))
        finally:
            emu.stop()
    print(f"{'driver':<26} {'calls':>5} {'right':>5} {'wrong':>5} {'error':>5} {'hang':>5} {'not called':>10}")
    for label, t in rows:
        if t is None:
            print(f"{label:<26} {'(instrument not emulated)':>40}")
            continue
        calls = t["right"] + t["wrong"] + t["error"] + t["hang"]
        print(f"{label:<26} {calls:>5} {t['right']:>5} {t['wrong']:>5} {t['error']:>5} {t['hang']:>5} "
              f"{t['not called']:>10}")
        if verbose:
            print("    " + ", ".join(f"{m}: {o}" for m, o in t["which"]))


if __name__ == "__main__":
    import sys
    main(verbose="-v" in sys.argv)
