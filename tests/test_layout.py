"""The package's layout: imports run one way (no cycle), and the report is a consumer nothing imports."""

import ast
import subprocess
import sys
from pathlib import Path

import lightning_gan_monitor

PACKAGE = Path(lightning_gan_monitor.__file__).parent


def module_imports() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports at its top level (not inside functions)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        imported = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightning_gan_monitor"):
                imported.add(node.module)
                imported |= {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names if alias.name.startswith("lightning_gan_monitor")}
        graph[name] = imported
    return {name: {m for m in imported if m in graph and m != name} for name, imported in graph.items()}


def test_layout_imports_run_one_way():
    graph = module_imports()
    # the package's __init__ re-exports the public names: leave it out of the cycle search
    graph = {name: deps - {"lightning_gan_monitor"} for name, deps in graph.items() if name != "lightning_gan_monitor"}
    done, stack = set(), []

    def visit(name):
        assert name not in stack, f"import cycle: {' -> '.join([*stack[stack.index(name) :], name])}"
        if name in done:
            return
        stack.append(name)
        for dep in graph[name]:
            visit(dep)
        stack.pop()
        done.add(name)

    for name in graph:
        visit(name)


def test_layout_report_is_imported_by_no_module():
    graph = module_imports()
    assert [name for name, deps in graph.items() if "lightning_gan_monitor.report" in deps] == []
    code = "import sys, lightning_gan_monitor.pytorch_lightning\nprint('lightning_gan_monitor.report' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # only `GANMonitor.plot()` imports it, when called


def test_layout_the_core_and_the_plain_loop_import_no_lightning():
    packages = ("pytorch_lightning", "lightning", "lightning_fabric")
    code = (
        "import sys, lightning_gan_monitor.monitor, lightning_gan_monitor.loop\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {packages}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_layout_adapters_are_thin_and_files_hold_one_idea():
    lines = {path.name: len(path.read_text().splitlines()) for path in PACKAGE.glob("*.py")}
    assert {name: n for name, n in lines.items() if name in ("callback.py", "fabric.py", "loop.py") and n > 230} == {}
    # a ratchet: the core (monitor.py, about 500 lines with its docstrings) is the longest file
    assert {name: n for name, n in lines.items() if n > 520} == {}
