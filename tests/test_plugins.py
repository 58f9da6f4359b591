"""``plugins:`` in a config: a user's strategy registered in a module or a .py file is known to
the command-line tools, to a study's planning, and to tools reading a finished run, each in its
own process; a plugin that cannot be imported is a config error naming it."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from helpers import REPO, tiny_run_args, write_image_folder
from tavaal_cls.cli import main as cls_main
from tavaal_cls.config import ClsConfig
from tavaal_seg.core.config import ConfigError
from tavaal_seg.core.strategies import STRATEGIES
from tavaal_seg.core.validation import load_config

# picks the candidates in the order the run hands them over, so its choice is checkable
PLUGIN = textwrap.dedent('''\
    import numpy as np

    import tavaal_seg


    @tavaal_seg.register_strategy("{name}", score_meaning="position among the candidates (lowest first)")
    def first_candidates(ctx):
        order = np.arange(len(ctx.candidates), dtype=np.float64)
        return tavaal_seg.Selection(np.asarray(ctx.candidates)[: ctx.budget], order[: ctx.budget], order)
    ''')


@pytest.fixture
def plugin_file(tmp_path, request):
    """A plugin file registering a strategy named after the test; unregistered afterwards."""
    name = "first_" + request.node.name.removeprefix("test_")[:20]
    path = tmp_path / "lab" / "my_strategies.py"
    path.parent.mkdir()
    path.write_text(PLUGIN.format(name=name))
    yield path, name
    if name in STRATEGIES:
        STRATEGIES.unregister(name)


def run_tool(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / tool), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**__import__("os").environ, "NO_ALBUMENTATIONS_UPDATE": "1"})


def test_a_plugin_file_adds_a_strategy_that_runs_and_ranks_from_other_processes(plugin_file, tmp_path):
    path, name = plugin_file
    root, run = write_image_folder(tmp_path / "data"), tmp_path / "run"
    # a relative path, as a user types it in the folder they work in
    done = run_tool("al_cls.py", *tiny_run_args(root, run, "--cycles", "2", "--strategy", name,
                                                "--set", "plugins=[lab/my_strategies.py]"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["plugins"] == [str(path.resolve())] and saved["active"]["strategy"] == name
    state = json.loads((run / "state.json").read_text())
    picked = state["selections"][1]
    assert len(picked["items"]) == 8
    assert [item["score"] for item in picked["items"]] == list(range(8))  # the plugin's choice, in its order
    # another process, another folder: the run dir's config brings the plugin along
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ranked = run_tool("rank_images.py", str(run), "--images", str(root / "test"), "--budget", "3",
                      "--out", str(tmp_path / "ranking.csv"), cwd=elsewhere)
    assert ranked.returncode == 0, ranked.stderr[-3000:]
    summary = json.loads(ranked.stdout)
    assert summary["ranked"] == 16 and summary["picked"] == 3


def test_a_plugin_is_imported_once_per_process(plugin_file):
    path, name = plugin_file
    for _ in range(2):  # a second read (a resume in the same process) does not register it again
        cfg = load_config(ClsConfig, None, [f"plugins=[{path}]", f"active.strategy={name}"])
    assert cfg.active.strategy == name and STRATEGIES[name].score_meaning.startswith("position")


def test_a_strategy_name_without_its_plugin_is_refused_by_key(plugin_file):
    _, name = plugin_file
    with pytest.raises(ConfigError, match=rf"active.strategy: expected one of .*got '{name}'"):
        load_config(ClsConfig, None, [f"active.strategy={name}"])


def test_plugins_that_cannot_be_imported_are_named(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"plugins: cannot import 'mylab.nothing': no module named 'mylab'"):
        load_config(ClsConfig, None, ["plugins=[mylab.nothing]"])
    with pytest.raises(ConfigError, match=r"plugins: no such file: .*absent\.py"):
        load_config(ClsConfig, None, [f"plugins=[{tmp_path / 'absent.py'}]"])
    broken = tmp_path / "broken.py"
    broken.write_text("import numpy\n\nraise RuntimeError('needs a GPU')\n")
    with pytest.raises(ConfigError, match=rf"importing '{broken}' failed at {broken}:3: RuntimeError: needs a GPU"):
        load_config(ClsConfig, None, [f"plugins=[{broken}]"])
    assert "tavaal_plugin_broken" not in " ".join(sys.modules)  # a failed import leaves nothing half-loaded
    # on the command line: exit 2, one line naming the key
    code = cls_main(tiny_run_args(tmp_path, tmp_path / "run", "--set", "plugins=[mylab.nothing]"))
    err = capsys.readouterr().err
    assert code == 2 and "plugins: cannot import 'mylab.nothing'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_study_accepts_a_strategy_its_config_plugins_register(plugin_file, tmp_path, capsys):
    from tavaal_seg.studies import cli as study_cli

    path, name = plugin_file
    config = tmp_path / "exp.yaml"
    config.write_text(f"plugins: [{path}]\ndata:\n  name: cifar10\nactive:\n  cycles: 1\n")
    args = ["--config", str(config), "--strategies", f"random,{name}", "--seeds", "0", "--out", str(tmp_path / "s"),
            "--task", "cls"]
    assert name not in STRATEGIES  # as in a fresh `run_study.py` process: only the config's plugins know it
    _, plan = study_cli.prepare_study(study_cli.run_study_parser().parse_args(args), [])
    assert [p.ref.strategy for p in plan] == ["random", name]
    assert [p.command[p.command.index("--strategy") + 1] for p in plan] == ["random", name]
