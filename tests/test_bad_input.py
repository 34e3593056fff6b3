"""Bad input, as a user types it: a message naming the option, file or element; never a traceback, never accepted.

Each row ran to a traceback or was silently accepted before (issue 12's list).
"""

import socket
import subprocess
from pathlib import Path

import pytest

from helpers import HIL

SHIPPED = Path(__file__).parent.parent / "circuits"

DIVIDER_BODY = ('ground = "gnd"\ninputs = ["vin"]\noutputs = ["out"]\n'
                '[[edge]]\nname = "R1"\na = "vin"\nb = "out"\ng = 1e-3\n'
                '[[edge]]\nname = "R2"\na = "out"\nb = "gnd"\ng = 1e-3\n')


def files(tmp: Path) -> dict:
    """The inputs the table refers to, written into ``tmp``."""
    (tmp / "folder").mkdir()
    (tmp / "utf16.csv").write_bytes("vin,out\n0.5,0.25\n".encode("utf-16"))
    (tmp / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (tmp / "underscore.csv").write_text("vin,out\n1_0,0.5\n0.2,0.1\n")
    (tmp / "ok.csv").write_text("vin,out\n" + "".join(f"{x / 10},{x / 20}\n" for x in range(10)))
    (tmp / "afile").write_text("not a folder\n")
    (tmp / "noinputs.toml").write_text('ground = "gnd"\ninputs = []\noutputs = ["out"]\n'
                                       '[[edge]]\nname = "R1"\na = "a"\nb = "out"\ng = 1e-3\n'
                                       '[[edge]]\nname = "R2"\na = "out"\nb = "gnd"\ng = 1e-3\n'
                                       '[[edge]]\nname = "R3"\na = "a"\nb = "gnd"\ng = 1e-3\n')
    (tmp / "outground.toml").write_text('ground = "gnd"\ninputs = ["vin"]\noutputs = ["out"]\n'
                                        '[[edge]]\nname = "R1"\na = "vin"\nb = "gnd"\ng = 1e-3\n'
                                        '[[edge]]\nname = "R2"\na = "out"\nb = "gnd"\ng = 1e-3\n')
    (tmp / "floating.toml").write_text(DIVIDER_BODY + '[[edge]]\nname = "R3"\na = "x"\nb = "y"\ng = 1e-3\n')
    (tmp / "listedge.toml").write_text('ground = "gnd"\ninputs = ["vin"]\noutputs = ["out"]\n'
                                       'edge = [["R1", "vin", "out", 1e-3]]\n')
    (tmp / "newline.toml").write_text('name = "t\\n.control"\n' + DIVIDER_BODY)
    (tmp / "dotdot.toml").write_text('name = "../../x"\n' + DIVIDER_BODY)
    (tmp / "layered.toml").write_text('kind = "layered"\nname = "t\\n.control"\n[[layer]]\nr_f = [1e5]\n'
                                      'g_plus = [[1e-5, 1e-5]]\ng_minus = [[1e-5, 1e-5]]\n')
    (tmp / "noise.toml").write_text("noise = 1e6\n")
    (tmp / "adc.toml").write_text("adc_bits = 12\nadc_range = 1e-9\n")
    (tmp / "wire.toml").write_text("wire_resistance = 1e300\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp / "nobody.toml").write_text(f'retries = 0\n[board]\nresource = "TCPIP::127.0.0.1::{port}::SOCKET"\n'
                                     f'[[smu]]\nnode = "vin"\nresource = "TCPIP::127.0.0.1::{port + 1}::SOCKET"\n'
                                     f'[[smu]]\nnode = "out"\nresource = "TCPIP::127.0.0.1::{port + 2}::SOCKET"\n')
    return {"port": port}


T = ["train", "divider", "--teacher", "1"]
CSV = ["train", "divider", "--data"]
CASES = [
    # tracebacks before
    (T + ["--steps", "-1", "--out", "{tmp}/r"], "--steps -1: steps must be a whole number >= 1"),
    (["train", "{tmp}/noinputs.toml", "--teacher", "1", "--out", "{tmp}/r"], "has no inputs: every node sits at 0 V"),
    (["coercivity", "{tmp}/noinputs.toml", "--teacher", "1"], "has no inputs"),
    (["train", "{tmp}/outground.toml", "--teacher", "1", "--out", "{tmp}/r"],
     "outground.toml:3: output 'out' is joined only to ground (edge R2): its voltage is 0 V"),
    (CSV + ["{tmp}/folder", "--out", "{tmp}/r"], "folder: not a file"),
    (CSV + ["{tmp}/utf16.csv", "--out", "{tmp}/r"], "utf16.csv: not a UTF-8 text file"),
    (CSV + ["{tmp}/binary.csv", "--out", "{tmp}/r"], "binary.csv: not a UTF-8 text file"),
    (CSV + ["{tmp}/ok.csv", "--test-fraction", "1.0", "--out", "{tmp}/r"], "--test-fraction 1.0: must be at least 0"),
    (CSV + ["{tmp}/ok.csv", "--test-fraction", "nan", "--out", "{tmp}/r"], "--test-fraction nan: must be at least 0"),
    (T + ["--steps", "5", "--out", "{tmp}/afile"], "--out {tmp}/afile: exists and is not a folder"),
    (T + ["--steps", "5", "--out", "/dev/null"], "--out /dev/null: exists and is not a folder"),
    (T + ["--steps", "5", "--out", "/proc/hil-run"], "--out /proc/hil-run: cannot create the folder"),  # unwritable
    (T + ["--backend", "bench", "--bench", "{tmp}/nobody.toml", "--rule", "cl", "--out", "{tmp}/r"],
     "resistor board at TCPIP::127.0.0.1::{port}::SOCKET: cannot connect (1 tries"),
    (["info", "{tmp}/floating.toml"], "floating.toml:15: floating subnetwork: node(s) x, y"),
    (["info", "{tmp}/listedge.toml"], "listedge.toml:4: edge #1 is not a table"),
    # silently accepted before
    (T + ["--lr", "-1", "--out", "{tmp}/r"], "--lr -1.0: lr must be a positive finite number"),
    (T + ["--lr", "inf", "--out", "{tmp}/r"], "--lr inf: lr must be a positive finite number"),
    (T + ["--steps", "0", "--out", "{tmp}/r"], "--steps 0: steps must be a whole number >= 1"),
    (T + ["--batch", "0", "--out", "{tmp}/r"], "--batch 0: batch must be a whole number >= 1"),
    (T + ["--nudge", "-0.1", "--out", "{tmp}/r"], "--nudge -0.1: nudge must be a positive finite number"),
    (T + ["--checkpoint-every", "0", "--out", "{tmp}/r"], "--checkpoint-every 0: checkpoint every must be a whole number >= 1"),
    (T + ["--from-board", "--out", "{tmp}/r"], "--from-board needs --backend bench"),
    (CSV + ["{tmp}/ok.csv", "--test-fraction", "-1", "--out", "{tmp}/r"], "--test-fraction -1.0: must be at least 0"),
    (CSV + ["{tmp}/underscore.csv", "--out", "{tmp}/r"], "underscore.csv:2: column 1 'vin': '1_0' is not a number"),
    (["netlist", "divider", "--inputs", "nan", "-o", "{tmp}/d.cir"], "--inputs: 'nan' is not a finite number of volts"),
    (["train", "divider", "--teacher", "1", "--backend", "ngspice", "--nonideal", "{tmp}/noise.toml", "--out",
      "{tmp}/r"], "noise.toml:1: noise = 1000000.0 is outside [0, 1]: noise past 1 V rms drowns every reading"),
    (["grad", "divider", "--teacher", "1", "--backend", "ngspice", "--nonideal", "{tmp}/adc.toml"],
     "adc.toml:2: adc_range = 1e-09 is outside [0.001, 1000]"),
    (["grad", "divider", "--teacher", "1", "--backend", "ngspice", "--nonideal", "{tmp}/wire.toml"],
     "wire.toml:1: wire_resistance = 1e+300 is outside [0, 1e+06]: a wire of more than 1 Mohm is an open circuit"),
    (["sweep", "divider", "--steps", "0", "--out", "{tmp}/s"], "--steps 0: steps must be a whole number >= 1"),
    (["sweep", "divider", "--nudges", "-1", "--out", "{tmp}/s"], "--nudge -1.0: nudge must be a positive finite number"),
    # item 13: a circuit's name is a plain name
    (["train", "{tmp}/newline.toml", "--teacher", "1", "--out", "{tmp}/r"],
     "newline.toml:1: circuit name 't\\n.control' is not a plain name"),
    (["perturb", "{tmp}/newline.toml", "-o", "{tmp}/p.toml"], "circuit name 't\\n.control' is not a plain name"),
    (["emulate", "{tmp}/dotdot.toml"], "dotdot.toml:1: circuit name '../../x' is not a plain name"),
    (["netlist", "{tmp}/layered.toml", "-o", "{tmp}/l.cir"],
     'layered.toml:1: kind = "layered" is the matrix format of earlier hil versions'),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_a_clear_error(tmp_path, args, message):
    extra = files(tmp_path)
    fill = lambda s: s.replace("{tmp}", str(tmp_path)).replace("{port}", str(extra["port"]))
    before = sorted(p.name for p in tmp_path.iterdir())
    p = subprocess.run(HIL + [*map(fill, args)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path / "folder")
    assert p.returncode == 2, p.stderr + p.stdout
    assert "Traceback" not in p.stderr and fill(message) in p.stderr, p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == before  # nothing written beside the inputs
    assert not any((tmp_path / "folder").iterdir())
