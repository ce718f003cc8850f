"""A real Home Assistant core for end-to-end tests.

`driver.py` and `steps.py` run inside Home Assistant's own virtual environment (Python
3.13, built by scripts/ha-venv.sh): they start a core in-process and perform steps on
request. `harness.py` is the pytest side (the project's Python): it starts the driver as
a subprocess and sends it one JSON line per step.
"""
