"""The README is a front page, and every `twin-tf ...` command line it or docs/ shows parses
with the CLI's own argparse."""

import pathlib
import re
import shlex

import pytest

from twin_tf import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))


def command_lines(text: str) -> list[str]:
  """The `twin-tf ...` command lines of a markdown page: inside code blocks (continuation
  lines joined) and inline code spans."""
  found, in_block, block = [], False, []
  for line in text.splitlines():
    if line.startswith("```"):
      if in_block:
        joined = re.sub(r"\\\n\s*", " ", "\n".join(block))
        found += [m.group(0) for m in re.finditer(r"twin-tf [^#\n]*", joined)]
        block = []
      in_block = not in_block
    elif in_block:
      block.append(line)
  outside = re.sub(r"```.*?```", "", text, flags=re.S).replace("\n", " ")
  found += re.findall(r"`(?:\.venv/bin/)?(twin-tf [^`]*)`", outside)
  return [f.strip() for f in found]


def test_readme_is_a_front_page_of_at_most_250_lines():
  assert len((REPO / "README.md").read_text().splitlines()) <= 250


def test_the_pages_show_command_lines():
  assert sum(len(command_lines(p.read_text())) for p in PAGES) >= 20


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_line_parses(page):
  """A full command line parses as the CLI parses it; a command named alone, or a line that
  elides the rest with `...` or asks for --help, names a real command and real flags."""
  parser = cli.build_parser()
  commands = next(a for a in parser._actions if a.dest == "command").choices  # pylint: disable=protected-access
  for line in command_lines(page.read_text()):
    args = shlex.split(line)[1:]
    assert args and args[0] in commands, f"{page.name}: `{line}` names no twin-tf command"
    if len(args) == 1 or "..." in args or "--help" in args:
      known = commands[args[0]]._option_string_actions  # pylint: disable=protected-access
      unknown = [a for a in args if a.startswith("-") and a.split("=")[0] not in known]
      assert not unknown, f"{page.name}: `{line}`: {unknown} are not flags of {args[0]}"
      continue
    try:
      if args[0] in cli.PIPELINE_COMMANDS:  # their unknown flags go to Beam
        parser.parse_known_args(args)
      else:
        parser.parse_args(args)
    except SystemExit as error:
      pytest.fail(f"{page.name}: `{line}` does not parse ({error})")
