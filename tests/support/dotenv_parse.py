"""Reads .env files with python-dotenv, as a Python application would.

Paths arrive one per line on standard input; for each, one JSON line goes to standard output:
the file's variables (a key without `=` maps to null), read with `dotenv_values(...,
interpolate=False)` so that `${VAR}` stays as written. Used by the dotenv editor's
parser-agreement test (src/target/dotenv_parsers.rs).
"""

import json
import logging
import sys

from dotenv import dotenv_values

# python-dotenv logs a warning for each line it cannot parse; the test compares values only.
logging.disable(logging.CRITICAL)

for line in sys.stdin:
    path = line.rstrip("\n")
    values = dotenv_values(path, interpolate=False, encoding="utf-8")
    print(json.dumps(dict(values)), flush=True)
