"""Flags generated from a config dataclass, and the one-line error wrapper."""

import os
import subprocess
import sys
import textwrap


def test_flags_follow_the_dataclass_and_errors_are_one_line(tmp_path):
  script = tmp_path / "toy_command.py"
  script.write_text(textwrap.dedent('''
      import dataclasses
      from typing import Optional, Sequence
      from data.plumbing import command

      @dataclasses.dataclass(frozen=True)
      class Config:
        world_dir: Optional[str] = dataclasses.field(default=None, metadata={"help": "w"})
        hidden_units: Sequence[int] = (4, 2)
        rate: float = 0.5
        mode: str = dataclasses.field(default="a", metadata={"choices": ("a", "b")})
        fancy: bool = False

      def main():
        config = command.config_from_flags(Config)
        if config.rate < 0:
          raise command.UserError("--rate must be >= 0")
        print(config)

      if __name__ == "__main__":
        command.define_config_flags(Config)
        command.start(command.run_command(main, "cmd"))
      '''))
  def run(*args):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          env=env)
  ok = run("--hidden_units=8,4,2", "--mode=b", "--fancy")
  assert ok.returncode == 0, ok.stderr
  assert "hidden_units=[8, 4, 2]" in ok.stdout and "mode='b'" in ok.stdout
  assert "fancy=True" in ok.stdout and "world_dir=None" in ok.stdout
  bad = run("--rate=-1")
  assert bad.returncode == 2 and bad.stderr.strip().endswith("cmd: error: --rate must be >= 0")
  bad_list = run("--hidden_units=8,x")
  assert bad_list.returncode == 2 and "--hidden_units: 'x' is not a valid int" in bad_list.stderr
  stray = run("extra")
  assert stray.returncode == 2 and "unexpected arguments" in stray.stderr
