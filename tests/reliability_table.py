"""Writes docs/reliability.md's tables from the tests, so the document cannot drift from them.

    python -m tests.reliability_table          # rewrite the tables in docs/reliability.md
    python -m tests.reliability_table --check  # exit 1 if they are stale (a test runs this)

The bad-input table lists every `Case` row of tests/test_bad_input.py (fast tier) and
tests/test_bad_input_exports.py (slow tier: they need trained exports); the faults table lists
every test of tests/test_faults.py with its docstring's first paragraph (or its name). Each
row names the issue item it answers where it has one ("22.4": issue 22, item 4). The tables
sit between the BEGIN/END markers; the prose around them is written by hand.
"""

import ast
import os
import re
import sys
from typing import List, Sequence, Tuple

from data.plumbing import files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "reliability.md")
FAULTS = os.path.join(ROOT, "tests", "test_faults.py")
BEGIN, END = "<!-- BEGIN generated tables: python -m tests.reliability_table -->", \
    "<!-- END generated tables -->"


def _cell(text: str) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
  return f"`{_cell(text)}`" if text else ""


def bad_input_rows() -> List[Tuple[str, Sequence]]:
  """(tier, cases) of every bad-input table."""
  from tests import test_bad_input
  from tests import test_bad_input_exports
  return [("fast", test_bad_input.CASES), ("slow", test_bad_input_exports.CASES)]


def fault_tests(path: str = FAULTS) -> List[Tuple[str, str, str, str]]:
  """(test name, finding, first docstring paragraph, tier) of every test function in `path`."""
  tree = ast.parse(open(path).read())
  rows = []
  for node in tree.body:
    if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
      continue
    doc = (ast.get_docstring(node) or "").strip()
    first = " ".join(doc.split("\n\n")[0].split()) or node.name[5:].replace("_", " ")
    found = re.match(r"((?:\d+\.\d+(?:,? (?:and )?)?)+):\s*", first)
    old = re.match(r"Finding (\d+):\s*", first)  # issue 12's numbering
    finding = found.group(1).strip(", ") if found else f"12.{old.group(1)}" if old else ""
    text = first[(found or old).end():] if (found or old) else first
    slow = any("slow" in ast.unparse(d) for d in node.decorator_list)
    rows.append((node.name, finding, text, "slow" if slow else "fast"))
  return rows


def render() -> str:
  lines = [BEGIN, "", "### Bad input (tests/test_bad_input.py, tests/test_bad_input_exports.py)",
           "", "| # | finding | command | case | flags | exit | message contains | tier |",
           "|---|---|---|---|---|---|---|---|"]
  number = 0
  for tier, cases in bad_input_rows():
    for case in cases:
      number += 1
      env = " ".join(f"{k}=..." for k in case.env)
      # The interpreter's path differs per machine; the table names it `python`.
      args = ["python" if arg == sys.executable else arg for arg in case.args]
      flags = " ".join(args) + (f" ({env})" if env else "")
      lines.append(f"| {number} | {case.finding} | `{case.command}` | {_cell(case.name)} | "
                   f"{_code(flags)} | {case.code} | {_code(case.message)} | {tier} |")
  lines += ["", "### Faults (tests/test_faults.py)", "",
            "| test | finding | what it proves | tier |", "|---|---|---|---|"]
  for name, finding, text, tier in fault_tests():
    lines.append(f"| `{name}` | {finding} | {_cell(text)} | {tier} |")
  lines += ["", END]
  return "\n".join(lines)


def updated(document: str) -> str:
  """`document` with the text between the markers replaced by `render()`."""
  return files.with_generated_block(document, BEGIN, END, render(), DOC)


def main(argv: Sequence[str]) -> int:
  document = open(DOC).read()
  new = updated(document)
  if "--check" in argv:
    if new != document:
      print(f"{DOC}: the tables are stale; run python -m tests.reliability_table")
      return 1
    return 0
  files.write_text(DOC, new)
  print(f"wrote {DOC}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
