"""The commands the READMEs give still resolve: every `python -m <module>` in a code block names a module
that exists, every flag it passes is one that module defines, and every `--config=<file>[:<argument>]`
loads (shell variables of the seed loops read as 0)."""

import glob
import importlib.util
import os
import re
import shlex

import pytest

from effjax.config.load import load_config

READMES = ["README.md"] + sorted(glob.glob("experiments/*/README.md"))
_DEFINED = re.compile(r"""DEFINE_[a-z_]+\(\s*["'](\w+)["']|add_argument\(\s*["']--([\w-]+)["']""")
_ABSL_FLAGS = {"alsologtostderr", "logtostderr", "verbosity", "v", "only_check_args", "helpfull", "help"}


def commands(path: str) -> list[str]:
    """The `python -m` commands in the fenced code blocks of a README, continuation lines joined."""
    text = open(path).read()
    out = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        uncommented = "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in block.splitlines())
        for line in re.sub(r"\\\n\s*", " ", uncommented).splitlines():
            for match in re.finditer(r"python -m ([\w.]+)(.*?)(?:;|&&|\||$)", line):
                out.append(f"{match.group(1)}{match.group(2)}")
    return out


def module_flags(module: str) -> set[str] | None:
    """Flag names the module's source defines (absl or argparse); None when it defines none itself."""
    spec = importlib.util.find_spec(module)
    source = open(spec.origin).read()
    names = {a or b.replace("-", "_") for a, b in _DEFINED.findall(source)}
    return names or None


CASES = [(path, command) for path in READMES for command in commands(path) if not command.startswith("pytest")]


def test_the_readmes_give_commands():
    assert len(CASES) > 50


@pytest.mark.parametrize("path, command", CASES, ids=[f"{p}:{c[:60]}" for p, c in CASES])
def test_readme_command_resolves(path, command):
    module, *args = shlex.split(re.sub(r"\$\{?S\}?", "0", command), posix=True)
    assert importlib.util.find_spec(module) is not None, f"{path}: no module {module}"
    defined = module_flags(module)
    for arg in args:
        if not arg.startswith("--") or arg.startswith("--config.") or "$" in arg:
            continue
        name = arg[2:].split("=")[0].replace("-", "_")
        if name.startswith("no") and defined and name[2:] in defined:
            continue
        if defined is not None:
            assert name in defined | _ABSL_FLAGS, f"{path}: {module} defines no flag --{name}"
        if name == "config" and "=" in arg and ("<" not in arg):
            spec = arg.split("=", 1)[1]
            if os.path.exists(spec.partition(":")[0]):
                load_config(spec)
