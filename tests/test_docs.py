"""Every snippet and command in the README and docs/: Python compiles (the self-contained ones run), commands name
scripts and options that exist."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Snippets that run on their own (page, index among its Python blocks); the others are fragments of a module.
RUNNABLE = {("guide.md", 1), ("guide.md", 4)}


def blocks(page: Path, language: str) -> list[str]:
    return [code for lang, code in re.findall(r"```(\w*)\n(.*?)```", page.read_text(), flags=re.S) if lang == language]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_python_snippets_compile_and_the_self_contained_ones_run(page):
    for index, code in enumerate(blocks(page, "python")):
        compiled = compile(code.replace("...\n", "pass\n"), f"{page.name}[{index}]", "exec")
        if (page.name, index) in RUNNABLE:
            exec(compiled, {"__name__": "docs"})


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_commands_name_scripts_and_options_that_exist(page):
    for code in blocks(page, "bash"):
        for line in code.splitlines():
            for command in line.split("&&"):
                words = command.split("#")[0].split()
                if len(words) < 2 or words[0] not in ("python", "python3") or not words[1].endswith(".py"):
                    continue
                script = ROOT / words[1]
                assert script.is_file(), f"{page.name}: {line}"
                source = script.read_text()
                for option in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
                    assert (
                        f'"{option}"' in source
                        or option.startswith("--config")
                        or option.startswith(("--trainer.", "--model."))
                    ), f"{page.name}: {script.name} has no option {option}"


def test_docs_example_answers_help_at_once():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits_gan.py"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--scenario" in done.stdout
    assert (
        "torch"
        not in subprocess.run(
            [sys.executable, "-X", "importtime", str(ROOT / "examples" / "digits_gan.py"), "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stderr
    )  # nothing heavy imported before the help is printed


def test_docs_example_console_fits_a_screen_and_the_exit_status_says_it_stopped(tmp_path):
    command = [sys.executable, str(ROOT / "examples" / "digits_gan.py"), "--scenario", "d-dominates"]
    done = subprocess.run([*command, "--logdir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1  # a rule stopped the run
    console = (done.stdout + done.stderr).splitlines()
    assert len(console) < 40
    diagnoses = [line for line in console if line.startswith("GANMonitor: Discriminator dominates after")]
    assert len(diagnoses) == 1  # once, as the monitor's message alone: no source path before it
    assert sum("GANMonitor summary of" in line for line in console) == 1
    assert not any("log_every_n_steps" in line for line in console)  # no Lightning warning the example causes


def test_docs_monitor_warnings_print_as_their_message_alone():
    import warnings

    from lightning_gan_monitor import GANMonitorWarning

    assert warnings.formatwarning("GANMonitor: x", GANMonitorWarning, "callback.py", 3) == "GANMonitor: x\n"
    assert "callback.py:3" in warnings.formatwarning("other", UserWarning, "callback.py", 3)
