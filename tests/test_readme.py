"""README.md as a guide that stays true: it starts with the two commands, its table of
contents matches its sections, its command list is `farm --help`'s, every link to docs/ and
examples/ resolves, and every snippet runs as shown: each YAML config validates (a template
or scenario fragment inside the config it says it belongs to), each `farm ...` line names a
command and options that exist, each Python block compiles.

The typical test (up, fault, watch, clear) runs for real in tests/test_examples.py
(examples/typical-test.sh).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

from farm.cli.app import main as farm_command

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", README, re.S | re.M)


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_it_starts_with_the_two_commands() -> None:
    first, second = BLOCKS[0][1].strip(), BLOCKS[1][1].strip()
    assert "pip install" in first and first.endswith("farm up --count 500"), first
    assert second == "scripts/test", second


def test_the_table_of_contents_is_every_section() -> None:
    headings = re.findall(r"^## (.+)$", README, re.M)
    start = README.index("## Contents")
    contents = README[start : README.index("\n## ", start + 1)]
    listed = re.findall(r"^- \[(.+?)\]\(#(.+?)\)", contents, re.M)
    sections = [h for h in headings if h != "Contents"]
    assert [title for title, _ in listed] == sections
    assert [anchor for _, anchor in listed] == [slug(h) for h in sections]


def test_the_command_list_is_every_command() -> None:
    start = README.index("## Commands")
    listed = set(re.findall(r"^\| `farm ([a-z-]+)", README[start:], re.M))
    assert isinstance(farm_command, click.Group)
    assert listed == set(farm_command.commands), set(farm_command.commands) ^ listed


def test_every_relative_link_resolves() -> None:
    for target in re.findall(
        r"\]\(((?:docs|examples|benchmarks|deploy|dashboards)/[^)#]+)", README
    ):
        assert (ROOT / target).exists(), target
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\((?!http)([^)#]+)", page.read_text()):
            assert (page.parent / target).exists(), (page.name, target)


def farm_lines() -> list[str]:
    lines = []
    for language, body in BLOCKS:
        if language not in ("sh", "text", "console"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            line = re.sub(r"^(\.venv/bin/)?farm ", "farm ", line)
            if line.startswith("farm ") and not line.startswith("farm:"):
                lines.append(line.split("  #")[0].split(" &")[0].split(" |")[0].strip())
    return lines


@pytest.mark.parametrize("line", farm_lines())
def test_each_farm_command_line_parses(line: str) -> None:
    """Its command, subcommand and options exist and take what the README gives them."""
    words = shlex.split(line)[1:]
    words = [w for w in words if not re.fullmatch(r"[A-Z]+(=\S+)?", w)]  # placeholders
    group: click.Command = farm_command
    context = None
    while isinstance(group, click.Group) and words and words[0] in group.commands:
        group = group.commands[words.pop(0)]
    context = click.Context(group, resilient_parsing=False)
    try:
        group.parse_args(context, list(words))
    except click.MissingParameter:
        pass  # a README line may leave a required argument to the reader ("FILE")
    except click.UsageError as error:
        pytest.fail(f"{line!r}: {error}")


def test_every_yaml_config_validates(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples" / "data", tmp_path / "data")  # plant.yaml's CSV files
    checked = 0
    templates: dict[str, object] = {}  # from the fragments before: a reader's one file
    fleet: dict[str, object] = {}  # the last whole config
    for number, (language, body) in enumerate(BLOCKS):
        if language != "yaml":
            continue
        data = yaml.safe_load(body)
        assert isinstance(data, dict), body
        path = tmp_path / f"block{number}.yaml"
        if "fleets" in data:
            named = {fleet["template"].split("@")[0] for fleet in data["fleets"]}
            missing = named - set(data.get("templates", {})) - {"default"}
            if missing and missing <= set(templates):
                data["templates"] = {
                    **{k: templates[k] for k in missing},
                    **data.get("templates", {}),
                }
                body = yaml.safe_dump(data)
        if "fleets" not in data and "templates" in data:
            templates.update(data["templates"])
            template = next(iter(data["templates"]))
            data["fleets"] = [
                {"name": "t", "template": template, "count": 1, "addressing": {"port_start": 30000}}
            ]
        if "fleets" not in data and "scenario" in data:  # on the fleet the README described
            data = {**fleet, "scenario": data["scenario"]}
            body = yaml.safe_dump(data)
        if "fleets" in data:
            fleet = data
        path.write_text(yaml.safe_dump(data) if "fleets" not in body else body)
        if "certs/" in body and not (tmp_path / "certs").exists():  # as the README says next
            made = subprocess.run(
                [sys.executable, "-m", "farm", "certs", "certs"],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
            )
            assert made.returncode == 0, made.stderr
        done = subprocess.run(
            [sys.executable, "-m", "farm", "validate", path.name],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 0, (body, done.stderr)
        checked += 1
    assert checked >= 3


def test_every_python_block_compiles() -> None:
    blocks = [body for language, body in BLOCKS if language == "python"]
    assert blocks
    for body in blocks:
        compile(body, "README.md", "exec")
