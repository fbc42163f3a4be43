"""Open a report's HTML page in a real headless Chromium: it renders, every figure loads, and
a screenshot is kept beside it.

    python -m experiments.browser_check --report_dir=R    # checks R/report.html, writes
                                                          # R/report.png; exit 2 on failure

Chromium is driven directly, no driver library: `--dump-dom` of a copy of the page with a
small script that, once the page has loaded, writes what it saw (how many <img>, how many
loaded with naturalWidth > 0, the title) into a marker element; then `--screenshot` of the
page itself. Chromium is Debian's `chromium` package (`apt-get install -y chromium`; CI
installs it, .ci/run). Every call has a timeout.
"""

import dataclasses
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from typing import List, Optional

from absl import flags

from data.plumbing import command
from data.plumbing.command import UserError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
FLAGS_HEADLESS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars")
MARKER = "pfd-browser-check"
PROBE = f"""<script>
window.addEventListener("load", function () {{
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }});
  var marker = document.createElement("pre");
  marker.id = "{MARKER}";
  marker.textContent = JSON.stringify({{images: images.length, loaded: loaded.length,
    title: document.title, tables: document.getElementsByTagName("table").length,
    heading: (document.querySelector("h1") || {{textContent: ""}}).textContent}});
  document.body.appendChild(marker);
}});
</script>"""
TIMEOUT_SECONDS = 120


@dataclasses.dataclass(frozen=True)
class PageCheck:
  """What the browser saw."""
  images: int
  loaded: int
  tables: int
  title: str
  heading: str
  screenshot: str

  @property
  def ok(self) -> bool:
    return self.images == self.loaded and bool(self.heading)


def find_chromium() -> Optional[str]:
  for name in CANDIDATES:
    path = shutil.which(name)
    if path:
      return path
  return None


def _run(binary: str, args: List[str], profile: str) -> subprocess.CompletedProcess:
  argv = [binary, *FLAGS_HEADLESS, f"--user-data-dir={profile}", *args]
  try:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_SECONDS,
                          check=False)
  except subprocess.TimeoutExpired:
    raise UserError(f"{binary} did not finish within {TIMEOUT_SECONDS}s: {' '.join(args)}"
                    ) from None


def check_page(html_path: str, screenshot_path: Optional[str] = None,
               width: int = 1280, height: int = 1800) -> PageCheck:
  """Renders `html_path` headless; returns what it saw and writes a PNG screenshot (default:
  beside the page, same name). Raises UserError without Chromium or if it cannot render."""
  binary = find_chromium()
  if binary is None:
    raise UserError("no Chromium found (chromium, chromium-browser or google-chrome on PATH); "
                    "install it: apt-get install -y chromium")
  html_path = os.path.abspath(html_path)
  screenshot_path = os.path.abspath(screenshot_path or os.path.splitext(html_path)[0] + ".png")
  with open(html_path, encoding="utf-8") as file:
    page = file.read()
  with tempfile.TemporaryDirectory(prefix="browser-check-") as tmp:
    probe = os.path.join(tmp, "probe.html")
    with open(probe, "w", encoding="utf-8") as file:
      file.write(page.replace("</body>", PROBE + "\n</body>", 1))
    dom = _run(binary, ["--virtual-time-budget=10000", "--dump-dom", f"file://{probe}"],
               os.path.join(tmp, "profile-dom"))
    found = re.search(rf'<pre id="{MARKER}">(.*?)</pre>', dom.stdout, re.S)
    if dom.returncode != 0 or not found:
      tail = "\n".join(dom.stderr.strip().splitlines()[-5:])
      raise UserError(f"{html_path}: Chromium did not render the page (exit {dom.returncode})"
                      f"{': ' + tail if tail else ''}")
    seen = json.loads(html.unescape(found.group(1)))
    shot = _run(binary, [f"--screenshot={screenshot_path}", f"--window-size={width},{height}",
                         f"file://{html_path}"], os.path.join(tmp, "profile-shot"))
    if shot.returncode != 0 or not os.path.exists(screenshot_path):
      raise UserError(f"{html_path}: Chromium wrote no screenshot (exit {shot.returncode})")
  return PageCheck(int(seen["images"]), int(seen["loaded"]), int(seen["tables"]),
                   str(seen["title"]), str(seen["heading"]), screenshot_path)


def main() -> None:
  report_dir = flags.FLAGS.report_dir
  if not report_dir:
    raise UserError("--report_dir is required")
  page = os.path.join(report_dir, "report.html")
  if not os.path.exists(page):
    raise UserError(f"{page}: no such page; experiments.compare and experiments.paper write "
                    "it beside report.md")
  result = check_page(page)
  print(f"{page}: {result.heading!r}, {result.tables} tables, {result.loaded}/{result.images} "
        f"figures loaded; screenshot {result.screenshot}")
  if not result.ok:
    raise UserError(f"{page}: {result.images - result.loaded} of {result.images} figures did "
                    "not load")


def run() -> None:
  flags.DEFINE_string("report_dir", None, "A report dir holding report.html.")
  command.start(command.run_command(main, "experiments.browser_check"))


if __name__ == "__main__":
  run()
