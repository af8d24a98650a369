"""Speed measurements kept as results, apart from the shipped weights: one "speed" record a
benchmark report (zoo.apps.evaluation.results, in reports/results/speed.json: the command that
measured it, the machine, the date, the figures), written by the benchmark's `--record` and
rendered into MODELS.md ("Speed")."""

import datetime
import os
import shlex
import sys

from zoo.apps.evaluation import results
from zoo.machine import machine_description


def command_line(module, argv=None):
    """The command that ran benchmark `module` with `argv` (default: this process's arguments),
    to print and record."""
    arguments = sys.argv[1:] if argv is None else argv
    return f"python -m {module}" + (f" {shlex.join(arguments)}" if arguments else "")


def machine_and_load():
    """The machine and its load average, for a benchmark's report."""
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return f"{machine_description()}; load average {load}"


def record(report, result, command):
    """Record `result` (a JSON-able dict) as the speed report `report` ("encode", "training",
    "index_build", "serving_MODEL", "grpc_floor") with its command, this machine and today's
    date, replacing the report of that name; return the file it went to."""
    if not report.replace("_", "").isalnum():
        raise ValueError(f"Expected a speed report name of letters, digits and _; got "
                         f"{report!r}.")
    return results.record("speed", {**result, "report": report, "command": command,
                                    "machine": machine_and_load(),
                                    "date": datetime.date.today().isoformat()})
