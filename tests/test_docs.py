"""The docs, kept honest: every relative link resolves and every command line parses.

Read: README.md and docs/**/*.md.

Links, outside code: `[text](path)`, `[text](path#anchor)`, `[text](#anchor)` and images. A path
resolves, relative to the file, to a file or folder inside the repository; an anchor into a .md file
names one of its headings (GitHub's slugs: lower case, punctuation dropped, spaces to hyphens, -1,
-2, ... for repeats). Web addresses are not followed.

Commands, in code blocks (fenced, or indented by four spaces), `\\`-continued lines joined: every
`python -m synergen_jax.X ...` (also inside another command, as in `launch/local_multiprocess.sh 2
python -m ...`). Nothing is run. Checked:
  * synergen_jax.X exists and is a command line (a module with a `__main__` block, or a package
    with `__main__.py`);
  * each `--flag`, `--flag=value`, `--flag value` and `--noflag` is a flag that X defines: the flag
    names are read by importing X in a fresh process (absl's FlagValues: X's own flags and the
    ones absl and the libraries it imports define, i.e. what X's command line accepts);
  * the `--config FILE[:arg]` file loads with its get_config argument (X's default config file when
    the command gives none), and every `--config.a.b=v` override applies to it, through
    ml_collections' config flag (as X parses its command line) and synergen_jax's own
    `cli.reload(spec, values)`.
Reading rules: words as the shell splits them, up to a shell operator (`|`, `&&`, `;`, `>`) or a
`#` comment; `[` and `]` around optional parts and `...` are ignored; a word that is not a flag is a
flag's value or a positional argument and is not checked, so placeholder values (`DIR`,
`gs://BUCKET/x`) and paths that do not exist are fine. No command line is skipped: `--config`
names a real file under configs/. Commands of other tools (launch/*.sh, gcloud, bash, pip,
pytest, `python -m bench...`) are not checked.

Every failure names the file, the line and the link or flag.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import urllib.parse
import warnings

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def doc_files(root: pathlib.Path = REPO) -> list[pathlib.Path]:
  return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


# ---------------------------------------------------------------------------------------------------
# Markdown reading: code blocks, headings, links.
# ---------------------------------------------------------------------------------------------------

FENCE = re.compile(r"^\s{0,3}(```+|~~~+)")


def split_markdown(text: str):
  """Yields (line number, line, kind) with kind "fence" (inside a fenced block), "indented"
  (an indented code block) or "text"."""
  fence = None
  previous_blank, in_indented = True, False
  for number, line in enumerate(text.splitlines(), 1):
    m = FENCE.match(line)
    if fence is not None:
      if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
        fence = None
        yield number, line, "text"
      else:
        yield number, line, "fence"
      previous_blank = False
      continue
    if m:
      fence = m.group(1)
      in_indented = False
      yield number, line, "text"
      continue
    blank = not line.strip()
    indented = line.startswith("    ") or line.startswith("\t")
    # An indented code block starts after a blank line and runs while lines stay indented (or
    # blank); a list item's continuation lines are text, but they never hold a command line.
    if indented and not blank and (previous_blank or in_indented):
      in_indented = True
      yield number, line, "indented"
    else:
      if not blank:
        in_indented = False
      yield number, line, "text"
    previous_blank = blank


def github_slug(heading: str) -> str:
  text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link: its text
  text = re.sub(r"<[^>]+>", "", text)                          # inline HTML
  text = re.sub(r"[^\w\- ]", "", text.strip().lower())          # punctuation (` * . , : ...)
  return text.replace(" ", "-")


@functools.lru_cache(maxsize=None)
def anchors(path: pathlib.Path) -> frozenset[str]:
  """The heading anchors of a markdown file, as GitHub makes them (and explicit <a id/name>)."""
  seen: dict[str, int] = {}
  out = set()
  for _, line, kind in split_markdown(path.read_text()):
    if kind != "text":
      continue
    m = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
    if m:
      base = github_slug(m.group(1))
      n = seen.get(base, 0)
      seen[base] = n + 1
      out.add(base if n == 0 else f"{base}-{n}")
    for a in re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line):
      out.add(a)
  return frozenset(out)


LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def check_links(path: pathlib.Path, root: pathlib.Path = REPO) -> list[str]:
  errors = []
  rel = path.relative_to(root)
  for number, line, kind in split_markdown(path.read_text()):
    if kind != "text":
      continue
    line = re.sub(r"(`+)(.+?)\1", lambda m: " " * len(m.group(0)), line)   # inline code
    for m in LINK.finditer(line):
      target = m.group(1)
      if SCHEME.match(target):
        continue
      where = f"{rel}:{number}: link ({target})"
      file_part, _, anchor = target.partition("#")
      file_part = urllib.parse.unquote(file_part)
      if not file_part:
        dest = path
      elif file_part.startswith("/"):
        dest = root / file_part.lstrip("/")
      else:
        dest = path.parent / file_part
      dest = pathlib.Path(os.path.normpath(dest))
      if dest != root and root not in dest.parents:
        errors.append(f"{where}: leaves the repository")
        continue
      if not dest.exists():
        errors.append(f"{where}: {dest.relative_to(root)} does not exist")
        continue
      if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        errors.append(f"{where}: {dest.relative_to(root)} has no heading with anchor #{anchor} "
                      f"(anchors: {', '.join(sorted(anchors(dest)))})")
  return errors


# ---------------------------------------------------------------------------------------------------
# Command lines.
# ---------------------------------------------------------------------------------------------------

COMMAND = re.compile(r"\bpython3?\s+-m\s+synergen_jax\b")
OPERATORS = {"|", "||", "&", "&&", ";", ";;", ">", ">>", "<", "2>", "&>", "2>&1", "|&"}


def code_lines(path: pathlib.Path):
  """(line number, logical line) of the code blocks, `\\`-continued lines joined."""
  pending, start = None, 0
  for number, line, kind in split_markdown(path.read_text()):
    if kind == "text":
      if pending is not None:
        yield start, pending
        pending = None
      continue
    if pending is None:
      pending, start = "", number
    stripped = line.rstrip()
    if stripped.endswith("\\"):
      pending += stripped[:-1] + " "
      continue
    yield start, pending + stripped
    pending = None
  if pending is not None:
    yield start, pending


def shell_words(line: str) -> list[str]:
  lex = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
  lex.whitespace_split = True
  return list(lex)


def unbracket(word: str) -> str:
  """`[--num` -> `--num`, `0]` -> `0`: the brackets of optional parts in a synopsis."""
  if word.startswith("[") and (len(word) == 1 or word[1] in "-." or word[1:].startswith("...")):
    word = word[1:]
  while word.endswith("]") and word.count("]") > word.count("["):
    word = word[:-1]
  return word


def commands(path: pathlib.Path):
  """(line, module, args) of every `python -m synergen_jax...` in the file's code blocks; a line
  whose commands cannot be read comes back as (line, None, error)."""
  for number, line in code_lines(path):
    wanted = len(COMMAND.findall(line))
    if not wanted:
      continue
    try:
      words = shell_words(line)
    except ValueError as e:   # unbalanced quotes
      yield number, None, f"cannot split the command line as the shell does: {e}"
      continue
    found = 0
    for i in range(len(words) - 2):
      if words[i] in ("python", "python3") and words[i + 1] == "-m" and (
          words[i + 2] == "synergen_jax" or words[i + 2].startswith("synergen_jax.")):
        end = next((j for j in range(i + 3, len(words)) if words[j] in OPERATORS), len(words))
        args = [w for w in map(unbracket, words[i + 3:end]) if w and w != "..."]
        found += 1
        yield number, words[i + 2], args
    if found != wanted:
      yield number, None, (f"{wanted} `python -m synergen_jax` in the line but {found} read "
                           f"as commands: write `python -m synergen_jax.X` as plain words")


# Reads the flags of command-line modules. It imports what every command line imports (jax, flax:
# most of the time) once, then forks one child per module, two at a time; a child imports its
# module and writes {"flags": {name: is_boolean}, "config": default --config file} or {"error"}.
_PROBE = r"""
import importlib, importlib.util, json, os, pathlib, sys
import numpy, jax, flax.linen, optax                # shared by every command line
from absl import app, flags
from ml_collections import config_flags
out_dir, names = sys.argv[1], sys.argv[2:]

def probe(name):
  try:
    spec = importlib.util.find_spec(name)
  except ModuleNotFoundError as e:
    return dict(error=f"no module {name} ({e})")
  if spec is None:
    return dict(error=f"no module {name}")
  if spec.submodule_search_locations is not None:
    if importlib.util.find_spec(name + ".__main__") is None:
      return dict(error=f"{name} is a package without __main__.py: not a command line")
    target = name + ".__main__"
  else:
    if "__main__" not in pathlib.Path(spec.origin).read_text():
      return dict(error=f"{name} has no `if __name__ == '__main__'` block: not a command line")
    target = name
  try:
    importlib.import_module(target)
  except Exception as e:
    return dict(error=f"importing {target} failed: {type(e).__name__}: {e}")
  FLAGS = flags.FLAGS
  config = None
  if "config" in FLAGS:
    try:
      config = config_flags.get_config_filename(FLAGS["config"])
    except Exception:
      config = None
  return dict(flags={n: bool(FLAGS[n].boolean) for n in FLAGS}, config=config)

running = {}
for i, name in enumerate(names):
  if len(running) == 2:
    running.pop(os.wait()[0])
  pid = os.fork()
  if pid == 0:
    try:
      result = probe(name)
    except BaseException as e:
      result = dict(error=f"reading the flags of {name} failed: {type(e).__name__}: {e}")
    with open(os.path.join(out_dir, f"{i}.json"), "w") as f:
      json.dump(result, f)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
  running[pid] = name
while running:
  running.pop(os.wait()[0])
"""

_PROBED: dict[str, dict] = {}


def module_flags(modules, also=()) -> dict[str, dict]:
  """{module: {"flags": {name: is_bool}, "config": default config file} or {"error": ...}}; the
  modules not read yet (and those of `also`) are read by one process, once per test process."""
  import tempfile

  todo = sorted((set(modules) | set(also)) - set(_PROBED))
  if todo:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory() as out:
      r = subprocess.run([sys.executable, "-c", _PROBE, out, *todo], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
      for i, module in enumerate(todo):
        file = pathlib.Path(out) / f"{i}.json"
        _PROBED[module] = json.loads(file.read_text()) if file.is_file() else {
            "error": f"reading the flags of {module} failed (status {r.returncode}): "
                     f"{(r.stderr or r.stdout).strip()[-2000:]}"}
  return {m: _PROBED[m] for m in modules}


def _cli():
  from synergen_jax.core import cli
  return cli


def _parse_config(spec: str, overrides: list[str]):
  """The config of `--config spec overrides...` as the command line builds it: ml_collections'
  locked config flag reads the file and parses the overrides against the fields' types; then
  synergen_jax's own loading applies the parsed values (cli.reload)."""
  from absl import flags
  from ml_collections import config_flags

  argv = ["prog", "--config", spec, *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  with warnings.catch_warnings():   # ml_collections loads the file with the deprecated load_module
    warnings.simplefilter("ignore", DeprecationWarning)
    flag_values(argv, known_only=True)
  values = dict(config_flags.get_override_values(flag_values["config"]))
  cli = _cli()
  if hasattr(cli, "reload"):
    return cli.reload(spec, values)
  return cli.apply_overrides(cli.load_config(spec), values)   # pragma: no cover


def _error_text(e: BaseException) -> str:
  text = " ".join(str(e).split())
  text = text.split("Traceback (most recent call last):")[0] + (
      text.rsplit("Error: ", 1)[-1] if "Traceback" in text else "")
  return f"{type(e).__name__}: {text[:600]}"


def check_command(where: str, module: str, args: list[str], info: dict,
                  root: pathlib.Path = REPO) -> list[str]:
  where = f"{where}: python -m {module}"
  if "error" in info:
    return [f"{where}: {info['error']}"]
  known: dict[str, bool] = info["flags"]
  errors = []
  spec, overrides = None, []
  i = 0
  while i < len(args):
    word = args[i]
    i += 1
    if word == "--":
      break
    if not word.startswith("-") or word == "-" or re.match(r"^-\d", word):
      continue   # a value or a positional argument
    name, has_value, value = word.lstrip("-").partition("=")
    if name == "config" or name.startswith("config."):
      if "config" not in known:
        errors.append(f"{where}: --{name}: {module} has no --config flag")
        continue
      if name == "config":
        if not has_value:
          if i >= len(args):
            errors.append(f"{where}: --config without a value")
            continue
          value, i = args[i], i + 1
        spec = value
      else:
        overrides.append(word)
        if not has_value and i < len(args) and not args[i].startswith("-"):
          overrides.append(args[i])
          i += 1
      continue
    if name.startswith("noconfig."):
      overrides.append(word)
      continue
    if name in known:
      if not known[name] and not has_value:
        i += 1   # the flag's value is the next word
      continue
    if name.startswith("no") and known.get(name[2:]) is True and not has_value:
      continue
    near = sorted(k for k in known if k.split(".")[0] in name or name in k)[:5]
    errors.append(f"{where}: --{name} is not a flag of {module}"
                  + (f" (did you mean {', '.join('--' + k for k in near)}?)" if near else ""))
  if spec is None and overrides:
    spec = info.get("config")
    if spec is None:
      return errors + [f"{where}: {overrides[0]} without --config, and {module} has no default "
                       f"config file"]
  if spec is None:
    return errors
  path, colon, arg = spec.partition(":")
  file = pathlib.Path(path) if os.path.isabs(path) else root / path
  if not file.is_file():
    return errors + [f"{where}: --config {spec}: {path} does not exist"]
  spec = str(file) + colon + arg
  try:
    _parse_config(spec, [])
  except Exception as e:  # noqa: BLE001 -- any failure to load is the finding
    return errors + [f"{where}: --config {path}{colon}{arg} does not load: {_error_text(e)}"]
  failed = False
  for j, word in enumerate(overrides):
    if not word.startswith("-"):
      continue
    single = [word] + ([overrides[j + 1]] if j + 1 < len(overrides)
                       and not overrides[j + 1].startswith("-") else [])
    try:
      _parse_config(spec, single)
    except Exception as e:  # noqa: BLE001
      failed = True
      errors.append(f"{where}: {word} does not apply to {path}{colon}{arg}: {_error_text(e)}")
  if overrides and not failed:
    try:
      _parse_config(spec, overrides)
    except Exception as e:  # noqa: BLE001
      errors.append(f"{where}: the overrides {' '.join(overrides)} do not apply together to "
                    f"{path}{colon}{arg}: {_error_text(e)}")
  return errors


@functools.lru_cache(maxsize=None)
def _every_module() -> frozenset[str]:
  """The modules of every doc's commands and of the self-test: read in one go."""
  found = {m for path in doc_files() for _, m, _ in commands(path) if m}
  return frozenset(found | {"synergen_jax.score", "synergen_jax.train", "synergen_jax.nosuchmodule"})


def check_commands(path: pathlib.Path, root: pathlib.Path = REPO) -> tuple[list[str], int]:
  """(errors, number of commands read) of one markdown file."""
  found = list(commands(path))
  infos = module_flags({m for _, m, _ in found if m}, also=_every_module())
  errors = []
  rel = path.relative_to(root)
  for number, module, args in found:
    if module is None:
      errors.append(f"{rel}:{number}: {args}")
    else:
      errors.extend(check_command(f"{rel}:{number}", module, args, infos[module], root))
  return errors, sum(1 for _, m, _ in found if m)


# ---------------------------------------------------------------------------------------------------
# The tests.
# ---------------------------------------------------------------------------------------------------

DOCS = doc_files()


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(path):
  errors = check_links(path)
  assert not errors, "broken links:\n  " + "\n  ".join(errors)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_command_lines_parse(path):
  errors, _ = check_commands(path)
  assert not errors, "command lines that do not parse:\n  " + "\n  ".join(errors)


def test_docs_are_read():
  """The readers find what is there: the index exists, and the commands of README and docs/ are
  found (an extraction that found nothing would pass the tests above for nothing)."""
  assert (REPO / "docs" / "README.md").is_file(), "docs/README.md (the index) is missing"
  read = sum(len(list(commands(p))) for p in DOCS)
  assert read >= 20, f"only {read} `python -m synergen_jax` command lines found in the docs"
  assert "python -m synergen_jax.demo" in (REPO / "README.md").read_text()


def test_the_checks_fail_where_they_should(tmp_path):
  """A doc with a broken link, a missing anchor, a wrong flag and a wrong override fails, naming
  the file, the line and the culprit."""
  (tmp_path / "docs").mkdir()
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "tiny.py").write_text((REPO / "configs" / "tiny.py").read_text())
  (tmp_path / "README.md").write_text("\n".join([
      "# Title",                                                     # 1
      "",                                                            # 2
      "See [the index](docs/index.md) and [here](#title).",          # 3
      "A [missing page](docs/nope.md) and a [bad anchor](#nope).",   # 4
      "",                                                            # 5
      "```",                                                         # 6
      "python -m synergen_jax.score --workdir D --token_ids 1,2 --nosuch 3",      # 7
      "python -m synergen_jax.train --config configs/tiny.py:fold=2x2 --workdir D \\",  # 8
      "    --config.train.stepz=3 [--config.train.steps=5 ...]",     # 9
      "python -m synergen_jax.train --config configs/tiny.py --workdir D --config.train.steps=5",
      "python -m synergen_jax.nosuchmodule --flag",                  # 11
      "```",
      "",
  ]))
  (tmp_path / "docs" / "index.md").write_text("# Index\n")
  link_errors = check_links(tmp_path / "README.md", tmp_path)
  assert len(link_errors) == 2, link_errors
  assert link_errors[0].startswith("README.md:4: link (docs/nope.md)")
  assert link_errors[1].startswith("README.md:4: link (#nope)")
  errors, read = check_commands(tmp_path / "README.md", tmp_path)
  assert read == 4
  assert len(errors) == 3, errors
  assert errors[0].startswith("README.md:7: python -m synergen_jax.score: --nosuch is not a flag")
  assert errors[1].startswith("README.md:8: python -m synergen_jax.train: --config.train.stepz=3 "
                              "does not apply"), errors[1]
  assert errors[2].startswith("README.md:11: python -m synergen_jax.nosuchmodule: no module")


def test_github_slugs():
  assert github_slug("Known limits") == "known-limits"
  assert github_slug("AOT for TPU topologies (v5p:4x4x4)") == "aot-for-tpu-topologies-v5p4x4x4"
  assert github_slug("`evaluate --suite`: benchmark suites") == "evaluate---suite-benchmark-suites"
  assert github_slug("Starting from [HF](x.md) weights") == "starting-from-hf-weights"
  assert github_slug("data_state and Grain") == "data_state-and-grain"
