"""Code dependencies DVC can trust: every project module a stage script imports (transitively, including
imports inside functions) is declared in that stage's ``deps`` in dvc.yaml — a file, or a folder above
it. Otherwise editing that module would leave `dvc status` clean and the results stale."""

import ast
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    """The project file of a module name (``cmcr.x.y`` or the stages' ``common``), or None if not ours."""
    if name == "common":
        return ROOT / "stages" / "common.py"
    if name != "cmcr" and not name.startswith("cmcr."):
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(path: Path) -> set[Path]:
    """Project files ``path`` imports directly: each imported module, the packages above it (their
    ``__init__`` runs first) and, for ``from package import name``, ``name`` when it is a submodule."""
    out: set[Path] = set()

    def add(module: str) -> None:
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            found = module_file(".".join(parts[:i]))
            if found is not None:
                out.add(found)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            add(node.module)
            for alias in node.names:
                add(f"{node.module}.{alias.name}")
    return out


def import_closure(script: Path) -> set[Path]:
    """Every project file ``script`` runs, directly or through other project modules (the script included)."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(imported_files(path) - seen)
    return seen


def stage_deps(dvc: dict, params: dict) -> dict[str, tuple[Path, list[str]]]:
    """Stage name (foreach and matrix expanded as DVC does) → (its script, its declared deps)."""
    out = {}
    for name, stage in dvc["stages"].items():
        for suffix, subst, body in expand(stage, params):
            deps = [subst(d) for d in body.get("deps", [])]
            words = body["cmd"].split()  # python -m cmcr.stage <stage> [argument]: runs stages/<stage>.py
            assert words[:3] == ["python", "-m", "cmcr.stage"], body["cmd"]
            out[name + suffix] = (ROOT / "stages" / f"{words[3]}.py", deps)
    return out


def expand(stage: dict, params: dict):
    """(name suffix, substitution, body) per generated stage: ``@<key>`` for foreach, ``@<a>-<b>`` for a matrix
    (DVC's naming), ``""`` for a plain stage."""
    import itertools

    def values(v):
        if isinstance(v, str):  # ${variants}
            v = params[v.strip("${}")]
        return list(v)

    if "matrix" in stage:
        axes = {k: values(v) for k, v in stage["matrix"].items()}
        for combo in itertools.product(*axes.values()):
            named = dict(zip(axes, combo))

            def subst(text, named=named):
                for k, v in named.items():
                    text = text.replace("${item.%s}" % k, str(v))
                return text
            yield "@" + "-".join(str(c) for c in combo), subst, stage
    elif "foreach" in stage:
        for key in values(stage["foreach"]):
            yield f"@{key}", (lambda text, key=key: text.replace("${item}", str(key)).replace("${key}", str(key))), stage["do"]
    else:
        yield "", (lambda text: text), stage


def undeclared(dvc: dict, params: dict) -> dict[str, list[str]]:
    """Per stage, the project files it imports that no dep (file, or a folder above it) covers."""
    missing = {}
    for stage, (script, deps) in stage_deps(dvc, params).items():
        covered = [ROOT / d for d in deps]
        lost = sorted(str(f.relative_to(ROOT)) for f in import_closure(script)
                      if not any(f == c or c in f.parents for c in covered))
        if lost:
            missing[stage] = lost
    return missing


def load() -> tuple[dict, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text()), yaml.safe_load((ROOT / "params.yaml").read_text())


def test_every_stage_depends_on_every_module_it_imports():
    assert undeclared(*load()) == {}


def test_the_check_fails_when_a_dependency_is_removed():
    dvc, params = load()
    train = dvc["stages"]["train"]["do"]
    removed = next(d for d in train["deps"] if d == "cmcr" or d.startswith("cmcr/"))
    train["deps"].remove(removed)
    missing = undeclared(dvc, params)
    assert set(missing) == {f"train@{v}" for v in params["variants"]}
    assert all(any(f == removed or f.startswith(removed.rstrip("/") + "/") for f in files) for files in missing.values())


def test_closure_follows_imports_inside_functions_and_packages(tmp_path):
    closure = {str(f.relative_to(ROOT)) for f in import_closure(ROOT / "stages" / "extract.py")}
    # build_space imports cmcr.encoders inside the function: every encoder module is in the closure
    assert {"cmcr/encoders/__init__.py", "cmcr/encoders/clip.py", "cmcr/encoders/clap.py", "cmcr/encoders/pointbert.py",
            "cmcr/encoders/demo.py", "cmcr/__init__.py", "stages/common.py"} <= closure
    assert "cmcr/report.py" not in closure


if __name__ == "__main__":  # print the deps each stage needs (for editing dvc.yaml)
    for stage, (script, _) in stage_deps(*load()).items():
        print(stage, sorted(str(f.relative_to(ROOT)) for f in import_closure(script)))


def test_validate_runs_first_and_training_is_keyed_on_the_effective_config():
    """Every stage depends on the validate stage's fixed-text output (so DVC runs it first and an invalid
    param stops before any stage deletes outputs); train@<variant> depends on its resolved config file and
    on no params but `seeds` (so an unchanged effective config does not retrain)."""
    dvc, params = load()
    assert "params.yaml" in dvc["stages"]["validate"]["deps"] and "params" not in dvc["stages"]["validate"]  # all of it
    assert dvc["stages"]["validate"]["outs"] == [{"data/params": {"persist": True}}]
    for name, stage in dvc["stages"].items():
        if name == "validate":
            continue
        body = stage.get("do", stage)
        assert "data/params/valid.txt" in body["deps"], name
    train, graph = dvc["stages"]["train"], dvc["stages"]["graph"]
    assert train["foreach"] == "${variants}"  # one stage per variant: its seeds train in one process
    assert graph["foreach"] == "${graphs}"
    # a trained unit depends on its own plan, the embeddings and the aggregate stage's fixed-text marker: no params,
    # not the whole data/aggregated (a link added for another unit adds aggregates there)
    for stage, plan in ((train, "data/params/variants/${key}.json"), (graph, "data/params/graphs/${key}.json")):
        assert plan in stage["do"]["deps"] and "params" not in stage["do"], stage
        assert "data/aggregated/DONE.txt" in stage["do"]["deps"] and "data/aggregated" not in stage["do"]["deps"]
    assert "data/params/aggregates.json" in dvc["stages"]["aggregate"]["deps"] and "params" not in dvc["stages"]["aggregate"]
    extract = dvc["stages"]["extract"]["do"]
    assert "data/params/spaces/${item}.json" in extract["deps"]
    assert "params" not in extract  # its plan holds the params it reads (its own encoder and sets: cmcr.plan)


def test_the_space_list_is_a_param_and_every_reader_depends_on_all_embeddings(tmp_path):
    """params.yaml ``spaces`` drives the extract@ stages (foreach) and the spaces stage's list, and every stage that reads embeddings
    depends on their folder, so a space added in params needs no dvc.yaml edit: DVC itself (``dvc stage list``,
    ``dvc dag``) makes extract@<new space> and puts it upstream of the graph stages; plugins/ (the encoders of
    your own spaces) is a dependency of validate and extract."""
    import os
    import shutil
    import subprocess
    import sys

    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["extract"]["foreach"] == "${spaces}" and "data/params/stages/spaces.json" in stages["spaces"]["deps"]
    assert "models/spaces" in stages["spaces"]["outs"]  # one stage, the stand-ins side by side (demo time)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["spaces"] == ["clip", "clap", "ulip"]
    for name, stage in stages.items():
        deps = stage.get("do", stage)["deps"]
        assert not [d for d in deps if str(d).startswith("data/embeddings/")], name  # the folder, not one space's
    assert "plugins" in stages["validate"]["deps"] and "plugins" in stages["extract"]["do"]["deps"]
    assert (ROOT / "plugins").is_dir()

    for item in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / item, tmp_path / item)
    params["spaces"] = ["clip", "clap", "ulip", "touch"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True, env=env)
    listed = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, check=True).stdout.split()
    assert {"extract@touch", "spaces", "extract@clip"} <= set(listed)
    upstream = subprocess.run(["dvc", "dag", "--dot", "graph@joint"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, check=True).stdout
    assert '"extract@touch"' in upstream and '"extract@ulip"' in upstream, upstream


def test_dvc_lock_holds_only_the_stages_of_dvc_yaml():
    """DVC keeps the dvc.lock entry of a stage removed from dvc.yaml, and re-reads and re-writes the whole lock after
    every stage: 63 entries of the former per-seed train stages were 43 % of it (issue 29's demo-time budget)."""
    import subprocess
    import sys
    from pathlib import Path

    dvc = str(Path(sys.executable).parent / "dvc")
    live = set(subprocess.run([dvc, "stage", "list", "--name-only"], cwd=ROOT, capture_output=True, text=True,
                              check=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"}).stdout.split())
    locked = set(yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"])
    assert locked <= live, f"dvc.lock has entries of stages no longer in dvc.yaml: {sorted(locked - live)[:10]}"


def test_every_path_dvc_yaml_names_is_the_layouts():
    """Issue 31, point 5: one source for artifact paths. Every dep and output of dvc.yaml is code (stages/, cmcr,
    params.yaml) or lies under a root of cmcr.layout, and the per-unit files are the layout's functions' paths."""
    from cmcr import layout

    dvc, _ = load()
    named = set()
    for stage in dvc["stages"].values():
        body = stage.get("do", stage)
        for key in ("deps", "outs", "metrics", "plots"):
            for entry in body.get(key, []):
                named.add(next(iter(entry)) if isinstance(entry, dict) else entry)
    code = {"params.yaml", "cmcr"}
    artifacts = {p for p in named if p not in code and not p.startswith("stages/")}
    roots = [str(r) for r in layout.ARTIFACT_ROOTS]
    outside = sorted(p for p in artifacts if not any(p == r or p.startswith(r + "/") for r in roots))
    assert not outside, outside
    for path in (layout.variant_plan("${key}"), layout.graph_plan("${key}"), layout.space_plan("${item}"),
                 layout.AGGREGATE_PLAN, layout.VALID, layout.AGGREGATES_DONE, layout.EMBEDDINGS / "${item}",
                 layout.SPACES / "${item}.pt", layout.CONNECTIONS / "${key}", layout.GRAPHS / "${key}"):
        assert str(path) in named, path
