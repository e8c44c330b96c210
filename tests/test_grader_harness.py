"""The harness package (``grader/harness/``) stays runnable inside the sandbox.

The sandbox cannot import the grader from disk: :mod:`grader.harness.boot` passes the
package's sources on the command line and loads them under their usual names, and each
child drops them from ``sys.modules`` before the submission runs.  That works only while
the package imports nothing of the project but itself, and imports its own modules at
module level (an import inside a function would run after the drop, and be refused).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from grader.harness import boot

HARNESS = Path(boot.__file__).resolve().parent
#: Other packages the harness may import: the sandbox has them (data_utils is the one package of
#: this project a submission may import too: the sandbox links it into a folder of its own).
THIRD_PARTY = {"torch", "torchvision", "numpy", "matplotlib", "data_utils"}


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(absolute module, line, at module level)`` for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}:{node.lineno}: use absolute imports (the boot loader names modules)"
            found.append((node.module or "", node.lineno, id(node) in top_level))
    return found


def test_the_harness_imports_only_itself_the_standard_library_and_torch():
    bad = []
    for path in sorted(HARNESS.glob("*.py")):
        for module, line, _ in _imports(path):
            top = module.split(".")[0]
            own = module == "grader.harness" or module.startswith("grader.harness.")
            if not own and top not in sys.stdlib_module_names and top not in THIRD_PARTY:
                bad.append(f"{path.name}:{line} imports {module}")
    assert not bad, bad


def test_the_harness_imports_its_own_modules_at_module_level_only():
    inside = [f"{path.name}:{line} imports {module}" for path in sorted(HARNESS.glob("*.py"))
              for module, line, top_level in _imports(path) if module.startswith("grader") and not top_level]
    assert not inside, inside


def test_the_boot_command_carries_every_module_within_the_argument_limit():
    command = boot.zygote_command(sys.executable, "5,6")
    assert command[:3] == [sys.executable, "-I", "-c"] and command[4:6] == ["--zygote", "5,6"]
    names = command[6::2]
    expected = {"grader", "grader.harness"} | {f"grader.harness.{p.stem}" for p in HARNESS.glob("*.py")
                                               if p.stem not in ("__init__", "boot")}
    assert set(names) == expected
    assert max(len(argument.encode()) for argument in command) < boot.MAX_ARGUMENT_BYTES


def test_booted_harness_runs_from_sources_and_grader_is_refused_afterwards(tmp_path):
    command = boot.zygote_command(sys.executable, "5,6")
    command[4] = "--check"  # the program's own entry stays idle; the snippet below runs instead
    command[3] += """
import sys
pairs = sys.argv[3:]
zygote = load_harness(dict(zip(pairs[0::2], pairs[1::2])))
print(zygote.__file__, zygote.load_submission.__module__)
for name in [n for n in sys.modules if n.split(".")[0] == "grader"]:
    del sys.modules[name]
ns = zygote.load_submission("def f(x):\\n    return x + 1\\n")
print(ns["f"](1), zygote.describe_error(ValueError("boom"))["error"])
print("hook left", any((f if isinstance(f, type) else type(f)).__name__ == "SourceFinder" for f in sys.meta_path))
# What is left to find grader with is the environment's own: an editable install of the
# project (CI's) serves it from disk; without that, and without the boot's hook, it is gone.
sys.meta_path[:] = [f for f in sys.meta_path  # finders are classes or instances
                    if "editable" not in (f if isinstance(f, type) else type(f)).__module__.lower()]
sys.path[:] = [p for p in sys.path if "site-packages" not in p and "__editable__" not in p]
sys.path_importer_cache.clear()
try:
    import grader.harness.wire
except ImportError as error:
    print("refused", type(error).__name__)
"""
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["grader/harness/zygote.py grader.harness.submission", "2 boom",
                                        "hook left False", "refused ModuleNotFoundError"]
