"""The README: at most ~150 lines, and its quick starts run as written, printing the numbers it quotes."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def _blocks(section: str) -> list:
    """(language, text) of every fenced block of the README's section ``section``."""
    start = README.index(f"## {section}")
    end = README.find("\n## ", start + 1)
    return re.findall(r"```(\w+)\n(.*?)```", README[start:end if end > 0 else None], re.S)


def _run(line: str, cwd: Path) -> str:
    """One command line as a user with the environment active runs it (bash, PATH = .venv/bin first)."""
    env = {"HOME": os.environ.get("HOME", str(cwd)), "PATH": f"{BIN}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    p = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{line}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_readme_fits_on_a_few_screens_and_links_the_docs():
    assert len(README.splitlines()) <= 160
    for page in re.findall(r"\]\((docs/[\w.]+)\)", README):
        assert (ROOT / page).exists(), page
    assert (ROOT / "docs" / "bias.png").exists() and "](docs/bias.png)" in README


def test_the_quick_starts_run_as_written(tmp_path):
    """Every command of the four quick starts, in a fresh folder holding the checkout's example data;
    the numbers the README quotes are the ones the commands print (to 5 %)."""
    (tmp_path / "circuits").mkdir()
    shutil.copy(ROOT / "circuits" / "net16-data.csv", tmp_path / "circuits")
    out, emulator = {}, None
    try:
        for lang, text in _blocks("Quick starts"):
            if lang == "python":
                p = subprocess.run([sys.executable, "-c", text], cwd=tmp_path, capture_output=True, text=True, timeout=300)
                assert p.returncode == 0, p.stderr
                continue
            for line in (x for x in text.splitlines() if x.strip()):
                command = line.split("  #")[0].strip()
                if "terminal 1" in line:  # a server the user leaves running: started, then waited for
                    bench_file = tmp_path / re.search(r"writes (\S+\.toml)", line).group(1)
                    emulator = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=tmp_path, text=True,
                                                env={"HOME": str(tmp_path), "PATH": f"{BIN}:/usr/bin:/bin"},
                                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                    deadline = time.time() + 120
                    while not bench_file.exists() and emulator.poll() is None and time.time() < deadline:
                        time.sleep(0.2)
                    assert bench_file.exists(), emulator.stderr.read() if emulator.poll() is not None else "timed out"
                    continue
                out[command] = _run(command, tmp_path)
    finally:
        if emulator is not None:
            emulator.terminate()
            emulator.wait(timeout=30)
    assert (tmp_path / "runs" / "bias" / "bias.png").exists() and (tmp_path / "calibrated.toml").exists()

    said = dict(zip(("start", "at1000", "at2000"), map(_number, re.search(
        r"falls from ([\d.e+-]+) to ([\d.e+-]+) V\^2 in\s+1,000 steps, ([\d.e+-]+) after 2,000", README).groups())))
    train = next(v for k, v in out.items() if k.startswith("hil train net16 --data"))
    resume = next(v for k, v in out.items() if k.startswith("hil train --resume"))
    a, b = map(float, re.search(r"loss (\S+) -> (\S+) V\^2 in 1000 steps", train).groups())
    c = float(re.search(r"-> (\S+) V\^2 in 2000 steps", resume).group(1))
    assert (a, b, c) == pytest.approx((said["start"], said["at1000"], said["at2000"]), rel=0.05)
    n_train, n_test = re.search(r"trains on (\d+) rows and holds (\d+) out", README).groups()
    assert f"{n_train} training examples, {n_test} held out" in train

    iris = next(v for k, v in out.items() if k.startswith("hil train iris.toml"))
    quoted = re.search(r"It prints `(accuracy: train \S+, test \S+)`", README).group(1)
    assert quoted in iris and (tmp_path / "runs" / "iris" / "confusion.png").exists()

    bias = next(v for k, v in out.items() if k.startswith("hil bias"))
    orders = [float(x) for x in re.search(r"order \(([\d., ]+)\)", README).group(1).split(", ")]
    measured = [float(re.search(rf"^{re.escape(r)}\s+(\S+)", bias, re.M).group(1)) for r in ("ep", "ep-sym", "ep-holo:4")]
    assert measured == pytest.approx(orders, abs=0.005)
    asym = float(re.search(r"asymmetry bias, (\S+) of", README).group(1))
    assert float(re.search(r"asymmetry bias .*? = (\S+) \(every EP rule", bias).group(1)) == pytest.approx(asym, rel=0.01)
