"""A report as one self-contained HTML page: its Markdown rendered, every figure embedded.

    write_page("REPORT/report.md")  ->  REPORT/report.html

The page needs nothing beside it: each `<img>` that points at a local PNG (e.g.
plots/survival.png, relative to the report) is embedded as a base64 data URI, and the style is
inline. Markdown is rendered by the `markdown` package (tables extension), the same one
TensorBoard uses. `experiments.browser_check` opens the page in a headless Chromium.
"""

import base64
import html
import os
import re

import markdown

from data.plumbing import files

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #1a1a1a; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; border: 1px solid #eee; margin: 0.5em 0; }
code { background: #f4f4f4; padding: 0 0.2em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; }
"""
_IMG_SRC = re.compile(r'(<img\b[^>]*\bsrc=")([^"]+)(")')


def _embed(report_dir: str, match: re.Match) -> str:
  src = html.unescape(match.group(2))
  if src.startswith(("data:", "http:", "https:")):
    return match.group(0)
  path = os.path.join(report_dir, src)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: the report shows this figure, but it is missing")
  with open(path, "rb") as file:
    data = base64.b64encode(file.read()).decode("ascii")
  kind = "svg+xml" if src.endswith(".svg") else "png"
  return f"{match.group(1)}data:image/{kind};base64,{data}{match.group(3)}"


def render(markdown_text: str, report_dir: str, title: str) -> str:
  """The page: `markdown_text` as HTML with its local images embedded."""
  body = markdown.markdown(markdown_text, extensions=["tables"])
  body = _IMG_SRC.sub(lambda match: _embed(report_dir, match), body)
  return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
          f"<body>\n{body}\n</body>\n</html>\n")


def write_page(markdown_path: str) -> str:
  """Writes report.html beside `markdown_path` (atomically); returns its path. The page's
  title is the report's first heading."""
  with open(markdown_path, encoding="utf-8") as file:
    text = file.read()
  heading = next((line.lstrip("# ").strip() for line in text.splitlines()
                  if line.startswith("# ")), "report")
  path = os.path.splitext(markdown_path)[0] + ".html"
  files.write_text(path, render(text, os.path.dirname(markdown_path), heading))
  return path
