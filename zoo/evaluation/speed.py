"""Speed measurements kept as results, apart from the shipped weights: one JSON file a
benchmark in reports/speed/ (the command that measured it, the machine, the date, the
figures), written by the benchmark's `--record` and rendered into MODELS.md ("Speed")."""

import datetime
import glob
import json
import os
import shlex
import sys

from zoo.evaluation.plots import write_atomically
from zoo.machine import machine_description

SPEED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "reports", "speed")


def command_line(module, argv=None):
    """The command that ran benchmark `module` with `argv` (default: this process's arguments),
    to print and record."""
    return f"python -m {module} " + shlex.join(sys.argv[1:] if argv is None else argv)


def machine_and_load():
    """The machine and its load average, for a benchmark's report."""
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return f"{machine_description()}; load average {load}"


def record(kind, result, command, directory=SPEED_DIR):
    """Write `result` (a JSON-able dict) as reports/speed/<kind>.json with its command, this
    machine and today's date; return the path."""
    if not kind.replace("_", "").isalnum():
        raise ValueError(f"Expected a speed report name of letters, digits and _; got {kind!r}.")
    document = {"command": command, "machine": machine_and_load(),
                "date": datetime.date.today().isoformat(), **result}
    return write_atomically(os.path.join(directory, f"{kind}.json"),
                            json.dumps(document, indent=1, sort_keys=True) + "\n")


def read(kind, directory=SPEED_DIR):
    """The recorded report `kind`, or None if none was recorded."""
    path = os.path.join(directory, f"{kind}.json")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def kinds(prefix="", directory=SPEED_DIR):
    """The recorded report names that start with `prefix`, sorted."""
    return sorted(os.path.basename(path)[:-len(".json")]
                  for path in glob.glob(os.path.join(glob.escape(directory), f"{prefix}*.json")))
