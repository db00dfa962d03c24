"""Run the Python examples in docs/*.md, so the documentation cannot drift from the code.

Rules for writing docs (one test per file):

- Every ```python fenced block of a file is executed, in order, in one fresh module
  namespace, inside a database test. A later block may use names from an earlier one.
- A block that cannot run here (settings snippets such as `INSTALLED_APPS = [...]`) is
  only compiled when the line right before its fence is
  `<!-- docs-test: compile-only -->`.
- Functions named `test_*` that a file's blocks define are called, without arguments,
  after all its blocks ran, so the testing examples are really exercised.
- Workflow names defined in a docs file must be unique within that file and must not
  clash with the workflows of the apps in tests/settings.py (e.g. `process_order`). The
  workflows a file registers are unregistered after its test, so two files may reuse a
  name. Code is compiled with the Markdown file as its filename and its real line
  numbers, so tracebacks point into the doc, and `workflow(...)` sees the same origin
  (module and line) each time the file runs.
"""

import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from django_durable import registry

DOCS = Path(__file__).resolve().parent.parent / "docs"
COMPILE_ONLY = "<!-- docs-test: compile-only -->"
OPENING_FENCE = re.compile(r"^```python\s*$")
CLOSING_FENCE = re.compile(r"^```\s*$")


@dataclass
class Block:
    first_line: int  # 1-based line number of the block's first code line
    code: str
    compile_only: bool


def python_blocks(text: str) -> list[Block]:
    """The ```python blocks of a Markdown text, in order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        if not OPENING_FENCE.match(lines[index]):
            index += 1
            continue
        compile_only = index > 0 and lines[index - 1].strip() == COMPILE_ONLY
        start = index + 1
        end = start
        while end < len(lines) and not CLOSING_FENCE.match(lines[end]):
            end += 1
        if end == len(lines):
            raise ValueError(f"The ```python block at line {index + 1} is never closed.")
        blocks.append(Block(start + 1, "\n".join(lines[start:end]) + "\n", compile_only))
        index = end + 1
    return blocks


def compile_block(block: Block, filename: str) -> types.CodeType:
    """Compile with blank lines in front, so line numbers are the Markdown file's."""
    return compile("\n" * (block.first_line - 1) + block.code, filename, "exec")


DOC_FILES = sorted(DOCS.glob("*.md"))


@pytest.mark.django_db
@pytest.mark.parametrize("path", DOC_FILES, ids=[path.name for path in DOC_FILES])
def test_python_examples_run(path: Path):
    filename = str(path)
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    module_name = f"docs_{path.stem.replace('-', '_')}"
    module = types.ModuleType(module_name)
    module.__file__ = filename
    workflows_before = {wf.name for wf in registry.all_workflows()}
    sys.modules[module_name] = module  # for code that looks its module up (dataclasses, ...)
    try:
        for block in blocks:
            code = compile_block(block, filename)
            if not block.compile_only:
                exec(code, module.__dict__)
        for name, value in list(module.__dict__.items()):
            if name.startswith("test_") and getattr(value, "__code__", None) is not None:
                if value.__code__.co_filename == filename:
                    value()
    finally:
        sys.modules.pop(module_name, None)
        for wf in registry.all_workflows():
            if wf.name not in workflows_before:
                registry.unregister(wf.name)


def test_getting_started_has_runnable_examples():
    """Guard the parser: the main guide's examples are found and mostly executed."""
    blocks = python_blocks((DOCS / "getting-started.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 4
    assert [b for b in blocks if b.compile_only]
    assert all("INSTALLED_APPS =" not in b.code for b in blocks if not b.compile_only)


def test_block_parser_reads_markers_and_line_numbers():
    text = "\n".join(
        [
            "# Title",  # line 1
            "<!-- docs-test: compile-only -->",
            "```python",
            "INSTALLED_APPS = []",  # line 4
            "```",
            "",
            "```bash",
            "echo not python",
            "```",
            "```python",
            "x = 1",  # line 11
            "y = x + 1",
            "```",
        ]
    )
    blocks = python_blocks(text)
    assert blocks == [
        Block(4, "INSTALLED_APPS = []\n", True),
        Block(11, "x = 1\ny = x + 1\n", False),
    ]
    namespace: dict = {}
    exec(compile_block(blocks[1], "doc.md"), namespace)
    assert namespace["y"] == 2
    with pytest.raises(ZeroDivisionError) as raised:
        exec(compile_block(Block(11, "1 / 0\n", False), "doc.md"), {})
    assert raised.traceback[-1].lineno + 1 == 11  # pytest's line numbers are 0-based


def test_output_markers_name_real_commands_and_known_ids():
    """docs/regenerate_output.py fills the block after each marker; a marker naming a
    command that does not exist, or an id the demo does not make, would break it."""
    from django.core.management import get_commands

    sys.path.insert(0, str(DOCS))
    try:
        import regenerate_output
    finally:
        sys.path.remove(str(DOCS))
    commands = get_commands()
    known = {name: name for name in regenerate_output.PLACEHOLDERS}
    markers = []
    for path in DOC_FILES:
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            matched = regenerate_output.MARKER.match(line.strip())
            if matched:
                markers.append(matched["command"])
                if matched["command"] != "python:":
                    assert matched["command"] in commands, f"{path.name}:{number + 1}"
                regenerate_output.fill(matched["args"], known)  # KeyError: unknown placeholder
                assert lines[number + 1] == "```text", f"{path.name}:{number + 2}"
    assert "durable_status" in markers and "durable_inspect" in markers
