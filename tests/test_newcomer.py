"""Issue 11: the first hour of a new user. Each test re-runs one reported mistake or
missing convention and asserts the exact outcome (exit code, message, numbers)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from typer.testing import CliRunner

import racer
from racer.cli import app
from racer.data import load_dataset
from racer.data.routerdc import routerdc_kind
from racer.data.split import shared_queries

runner = CliRunner()


def _invoke(*args: str, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input, env={"COLUMNS": "200"})


def _error_line(result) -> str:
    """The one ``Error:`` line of a refused command (and no traceback)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def _arc(shared_data: Path) -> tuple[Path, Path]:
    task = shared_data / "routerdc"
    return task / "arc_challenge_train.json", task / "arc_challenge_test.json"


# --- 1. any --bounds / --families list works --------------------------------------


def test_evaluate_without_binomial_reports_on_the_first_racer_method(shared_data, tmp_path):
    train, test = _arc(shared_data)
    out = tmp_path / "hb"
    result = _invoke(
        "evaluate", "--train", train, "--test", test, "--router", "prior", "--bounds", "hb",
        "--families", "cumulative", "--alpha", "0.2", "--trials", "10", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert "RACER hb cumulative (APS) is more accurate than the best single model at" in report
    verdict = json.loads((out / "results.json").read_text())["verdict"]
    assert verdict["method"] == "RACER hb cumulative (APS)"


# --- 2. leakage ---------------------------------------------------------------------


def test_same_train_and_test_file_is_refused(shared_data):
    _, test = _arc(shared_data)
    line = _error_line(_invoke("evaluate", "--train", test, "--test", test, "--router", "prior"))
    assert "hold the same queries, which would leak" in line


def test_train_folder_holding_the_test_file_is_trained_without_the_test_queries(
    shared_data, tmp_path
):
    train, test = _arc(shared_data)
    folder = tmp_path / "both"
    folder.mkdir()
    shutil.copy(train, folder / train.name)
    shutil.copy(test, folder / test.name)
    out = tmp_path / "out"
    result = _invoke(
        "evaluate", "--train", folder, "--test", test, "--router", "prior", "--alpha", "0.3",
        "--trials", "5", "--families", "threshold", "--bounds", "binomial", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    pooled, held_out = load_dataset(folder), load_dataset(test)
    texts = {" ".join(q.lower().split()) for q in held_out.queries}
    leaked = sum(" ".join(q.lower().split()) in texts for q in pooled.queries)
    assert leaked >= held_out.n_queries  # the whole test file was inside --train
    assert f"removed {leaked} of {pooled.n_queries} training queries" in text
    assert f"all {held_out.n_queries} test queries were in --train" in text
    assert f"({pooled.n_queries - leaked} queries)" in (out / "report.md").read_text()


def test_shared_queries_match_ids_and_normalised_text():
    from racer.data.dataset import RoutingDataset

    def data(queries, ids):
        n = len(queries)
        return RoutingDataset(
            queries=np.array(queries, dtype=object),
            model_names=("a", "b"),
            labels=np.ones((n, 2)),
            query_ids=np.array(ids),
            sources=np.full(n, "s"),
            name="d",
        )

    first = data(["What is 2+2?", "Name a gas", "Other"], ["x1", "x2", "x3"])
    second = data(["what  is\n2+2?", "Unrelated"], ["y1", "x3"])
    assert shared_queries(first, second).tolist() == [True, False, True]


# --- 3. RouterDC from its content; --kind, --pass-threshold, --missing -------------


def test_renamed_routerdc_files_read_the_same(shared_data, tmp_path):
    for original in ("mbpp.json", "mmlu_test.json"):
        copy = tmp_path / f"renamed_{original.replace('_', '')}"
        shutil.copy(shared_data / "routerdc" / original, copy)
        renamed, source = load_dataset(copy), load_dataset(shared_data / "routerdc" / original)
        np.testing.assert_array_equal(renamed.labels, source.labels)
        assert (renamed.quality is None) == (source.quality is None)
    assert load_dataset(tmp_path / "renamed_mbpp.json").quality is not None


def test_kind_from_values_tenths_versus_probabilities():
    assert routerdc_kind("x", np.array([[0.1, 0.3], [1.0, 0.0]] * 10)) == "pass_fraction"
    assert routerdc_kind("x", np.array([[0.27, 0.9125], [0.0, 0.61]])) == "choice"
    assert routerdc_kind("x", np.array([[0.0, 1.0]])) == "choice"
    with pytest.raises(ValueError, match="Pass kind='choice' or kind='pass_fraction'"):
        routerdc_kind("x", np.array([[0.5, 0.2]]))


def test_cli_kind_and_pass_threshold_change_the_labels(shared_data, tmp_path):
    from racer.cli.common import data_options as _data_options

    copy = tmp_path / "tasks.json"
    shutil.copy(shared_data / "routerdc" / "mbpp.json", copy)
    scores = np.array([list(r["scores"].values()) for r in json.loads(copy.read_text())])
    for kind, threshold, expected in (
        ("choice", None, scores > 0),
        ("auto", 0.9, scores >= 0.9),
        ("auto", None, scores >= 0.5),
    ):
        options = _data_options(kind, threshold, "keep")
        data = load_dataset(copy, **options)
        np.testing.assert_array_equal(data.labels, expected.astype(float))
    line = _error_line(_invoke("evaluate", "--train", copy, "--test", copy,
                               "--pass-threshold", "1.5"))  # fmt: skip
    assert "--pass-threshold must lie in (0, 1]" in line
    line = _error_line(_invoke("evaluate", "--train", copy, "--test", copy, "--missing", "x"))
    assert "--missing takes one of ['keep', 'drop_queries']" in line


def test_kind_on_a_routerbench_file_is_a_clear_error(shared_data):
    bench = shared_data / "routerbench" / "arc_challenge_test.csv"
    line = _error_line(
        _invoke("evaluate", "--train", bench, "--test", bench, "--kind", "choice")
    )
    assert "--kind applies to RouterDC JSON files only" in line


# --- 4. outputs checked before the work; one Error: line ----------------------------


def test_calibrate_refuses_an_existing_artifact_before_training(shared_data, tmp_path, monkeypatch):
    import racer.routers

    (tmp_path / "artifact").mkdir()
    (tmp_path / "artifact" / "racer_artifact.json").write_text("{}")

    def never(*args, **kwargs):
        raise AssertionError("trained although the output was refused")

    monkeypatch.setattr(racer.routers, "make_router", never)
    train, test = _arc(shared_data)
    out = tmp_path / "artifact"
    line = _error_line(_invoke("calibrate", "--train", train, "--calibration", test, "--out", out))
    assert "already holds an artifact; pass --overwrite" in line
    (tmp_path / "file").write_text("x")
    for command, held_out in (("calibrate", "--calibration"), ("evaluate", "--test")):
        line = _error_line(
            _invoke(command, "--train", train, held_out, test, "--out", tmp_path / "file")
        )
        assert "is a file" in line and "--out" in line


def test_evaluate_refuses_an_earlier_report_unless_overwrite(shared_data, tmp_path):
    train, test = _arc(shared_data)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("old")
    args = ["evaluate", "--train", train, "--test", test, "--router", "prior", "--out", out,
            "--trials", "3", "--alpha", "0.3", "--families", "threshold", "--bounds", "binomial"]
    assert "pass --overwrite" in _error_line(_invoke(*args))
    result = _invoke(*args, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "report.md").read_text() != "old"


def test_non_utf8_data_names_the_file(tmp_path):
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(bytes(range(128, 256)) * 4)
    line = _error_line(_invoke("evaluate", "--train", garbage, "--test", garbage))
    assert str(garbage) in line and "not a UTF-8 text file" in line


# --- 5. degenerate input -----------------------------------------------------------


def _routerdc_file(path: Path, source: Path, rows: int, edit=None) -> Path:
    records = json.loads(source.read_text())[:rows]
    for record in records:
        if edit is not None:
            edit(record)
    path.write_text(json.dumps(records))
    return path


def test_tiny_or_unlabelled_pools_are_refused_with_the_numbers(shared_data, tmp_path):
    train, test = _arc(shared_data)
    tiny = _routerdc_file(tmp_path / "arc_tiny.json", test, 5)
    line = _error_line(_invoke("evaluate", "--train", train, "--test", tiny))
    assert "has 5 queries with known labels, so each trial calibrates on 2" in line
    assert f"needs at least {racer.minimum_calibration_size(0.2, 0.1)} calibration" in line

    def unknown(record):
        record["scores"] = dict.fromkeys(record["scores"])

    empty = _routerdc_file(tmp_path / "arc_empty.json", test, 50, unknown)
    line = _error_line(_invoke("evaluate", "--train", train, "--test", empty))
    assert "has no query whose every label is known" in line


def test_routerdc_scores_out_of_range_and_null_questions_are_refused(shared_data, tmp_path):
    _, test = _arc(shared_data)

    def stretch(record):
        record["scores"] = {k: 5 * v - 2 for k, v in record["scores"].items()}

    with pytest.raises(ValueError, match=r"found \d+ value\(s\) outside"):
        load_dataset(_routerdc_file(tmp_path / "arc_wide.json", test, 40, stretch))
    records = json.loads(test.read_text())[:10]
    records[3]["question"] = None
    (tmp_path / "arc_null.json").write_text(json.dumps(records))
    with pytest.raises(ValueError, match=r'record 3: "question" must be a non-empty string'):
        load_dataset(tmp_path / "arc_null.json")


@pytest.mark.parametrize("value", ["0.1", b"0.1", True])
def test_alpha_must_be_a_number_not_a_string(value):
    from racer._validation import check_level

    with pytest.raises(ValueError, match="alpha must be a number in \\(0, 1\\)"):
        check_level("alpha", value)
    assert check_level("alpha", np.float32(0.25)) == 0.25


def test_external_scores_with_the_wrong_columns_name_the_option(shared_data, tmp_path):
    _, test = _arc(shared_data)
    scores = tmp_path / "scores.npy"
    np.save(scores, np.full((load_dataset(test).n_queries, 3), 0.5))
    line = _error_line(_invoke("evaluate", "--test", test, "--scores", scores))
    assert "--scores" in line and "7 models" in line


def test_cost_family_without_prices_gives_command_line_advice(shared_data):
    train, test = _arc(shared_data)
    line = _error_line(
        _invoke("calibrate", "--train", train, "--calibration", test, "--family", "cost")
    )
    assert "--family cost needs per-model prices in the --train data" in line
    assert "RACER(" not in line


@pytest.fixture(scope="module")
def artifact(shared_data, tmp_path_factory):
    train, test = _arc(shared_data)
    out = tmp_path_factory.mktemp("artifact") / "a"
    result = _invoke(
        "calibrate", "--train", train, "--calibration", test, "--router", "prior", "--alpha",
        "0.3", "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["risk_bound"] <= 0.3 and summary["artifact"] == str(out)
    return out


def test_route_keeps_blank_lines_aligned(artifact):
    lines = ["Which gas do plants absorb?", "", '{"query": "What is 2 + 2?"}', "   ", "Last one"]
    result = _invoke("route", "--artifact", artifact, input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5]
    assert [r.get("skipped") for r in records] == [None, "blank line", None, "blank line", None]
    assert [r["query"] for r in records] == ["Which gas do plants absorb?", "", "What is 2 + 2?",
                                            "", "Last one"]  # fmt: skip
    as_json = _invoke("route", "--artifact", artifact, "--json", input="\n".join(lines))
    assert json.loads(as_json.stdout) == records


# --- 8. the report's verdict and method page ---------------------------------------


def test_report_says_whether_racer_beats_the_best_single_model(shared_data, tmp_path):
    train, test = _arc(shared_data)
    out = tmp_path / "out"
    result = _invoke(
        "evaluate", "--train", train, "--test", test, "--router", "prior", "--alpha", "0.1,0.3",
        "--trials", "10", "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    document = json.loads((out / "results.json").read_text())
    rows = {(r["method"], r["alpha"]): r for r in document["results"]}
    more, cheaper = 0, 0
    for alpha in (0.1, 0.3):
        ours, best = rows[("RACER binomial threshold", alpha)], rows[("best single model", alpha)]
        more += ours["accuracy"] > best["accuracy"]
        cheaper += ours["mean_cost"] < best["mean_cost"]
    report = (out / "report.md").read_text()
    assert (
        f"RACER binomial threshold is more accurate than the best single model at {more} of 2 "
        f"alphas and cheaper at {cheaper} of 2" in report
    )
    assert printed["verdict"] == document["verdict"]
    assert "METHOD.md" not in report
    assert "racer/method.md" in report


def test_method_page_ships_in_the_package_and_matches_the_docs():
    shipped = Path(racer.__file__).parent / "method.md"
    docs = REPO_ROOT / "docs" / "method.md"
    assert shipped.read_text() == docs.read_text()
    text = docs.read_text()
    for needed in ("flag", "strict", "Learn-then-Test", "worst case", "Clopper-Pearson",
                   "Hoeffding-Bentkus", "Waudby-Smith", "regret", "## 9."):  # fmt: skip
        assert needed in text, needed
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "method.md" in config["tool"]["setuptools"]["package-data"]["racer"]


# --- 9. conventions ----------------------------------------------------------------


def test_version_help_and_completion():
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    result = _invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"racer {config['project']['version']}"
    assert racer.__version__ == config["project"]["version"]
    assert "Usage" in _invoke("-h").output
    assert "Usage" in _invoke("evaluate", "-h").output
    assert "--install-completion" in _invoke("--help").output


def test_typed_licensed_package():
    assert (Path(racer.__file__).parent / "py.typed").exists()
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["racer"]
    license_text = (REPO_ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert config["project"]["urls"]


def test_public_api_holds_the_aggregators():
    from racer.aggregate import choose_in_sets, choose_response

    assert racer.choose_in_sets is choose_in_sets
    assert racer.choose_response is choose_response
    assert set(racer.__all__) >= {"RACER", "load_dataset", "choose_in_sets", "choose_response"}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        racer.nope  # noqa: B018


def test_quiet_prints_only_the_report_path(shared_data, tmp_path):
    train, test = _arc(shared_data)
    out = tmp_path / "q"
    result = _invoke(
        "evaluate", "--train", train, "--test", test, "--router", "prior", "--alpha", "0.3",
        "--trials", "3", "--families", "threshold", "--bounds", "binomial", "--out", out,
        "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out / "report.md")


# --- 10. weight and start-up -------------------------------------------------------


def test_import_racer_loads_no_heavy_module():
    code = (
        "import sys, racer; heavy = ('sklearn', 'scipy', 'matplotlib', 'fastapi');"
        "print([m for m in heavy if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(REPO_ROOT / "src"), "PATH": ""},
    )  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_matplotlib_is_an_optional_extra():
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert not any(d.startswith("matplotlib") for d in config["project"]["dependencies"])
    extras = config["project"]["optional-dependencies"]
    assert any(d.startswith("matplotlib") for d in extras["plots"])
    first = re.search(r"```bash\n(.*?)\n", (REPO_ROOT / "README.md").read_text()).group(1)
    assert '".[plots]"' in first and "racer demo" in first


def test_report_without_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    from racer.data.split import train_test_split
    from racer.evaluation.run import EvaluationSettings
    from racer.evaluation.synthetic import make_synthetic_benchmark
    from racer.evaluation.task import evaluate_task, write_task_report

    data = make_synthetic_benchmark(400, random_state=0)
    train, test = train_test_split(data, 0.5, random_state=0)
    settings = EvaluationSettings(alphas=(0.2,), n_trials=3, families=("threshold",),
                                  bounds=("binomial",))  # fmt: skip
    evaluation = evaluate_task(test, test.labels * 0.8 + 0.1, settings, train=train)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    paths = write_task_report(evaluation, tmp_path)
    assert paths["figures"] == [] and not list(tmp_path.glob("*.png"))
    assert 'pip install "racer-routing[plots]"' in paths["figures_note"]
    assert 'pip install "racer-routing[plots]"' in (tmp_path / "report.md").read_text()


# --- issue 8 item 4: prices of the cost family come from the training split --------


def test_cost_family_prices_come_from_the_training_split():
    from racer.data.split import train_test_split
    from racer.evaluation.run import EvaluationSettings
    from racer.evaluation.synthetic import make_synthetic_benchmark
    from racer.evaluation.task import evaluate_task

    data = make_synthetic_benchmark(400, random_state=1)
    train, test = train_test_split(data, 0.5, random_state=1)
    test = replace(test, costs=test.costs * 10.0)
    settings = EvaluationSettings(alphas=(0.2,), n_trials=2, families=("cost",),
                                  bounds=("binomial",))  # fmt: skip
    evaluation = evaluate_task(test, test.labels * 0.8 + 0.1, settings, train=train)
    np.testing.assert_allclose(evaluation.model_costs, train.mean_costs())
    assert not np.allclose(evaluation.model_costs, test.mean_costs())
    assert evaluation.prices_from == train.name


# --- 7. figures --------------------------------------------------------------------


def test_point_labels_never_overlap_and_the_legend_stays_off_the_axes(tmp_path):
    from matplotlib.transforms import Bbox

    from racer.evaluation.figures import _layout, _pyplot, place_labels

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 0.05, 12) + 1, rng.normal(0, 0.05, 12) + 1  # a tight cluster
    handles = [axis.scatter(x, y, label="points")]
    _layout(figure, handles, ["points"], "note")
    labels = place_labels(axis, [(a, b, f"label {i}", "black") for i, (a, b) in
                                 enumerate(zip(x, y, strict=True))])  # fmt: skip
    renderer = figure.canvas.get_renderer()
    boxes = [label.get_window_extent(renderer) for label in labels]
    for i, first in enumerate(boxes):
        for second in boxes[i + 1 :]:
            overlap = Bbox.intersection(first, second)
            assert overlap is None or overlap.width * overlap.height < 1.0
    legend = figure.legends[0].get_window_extent(renderer)
    assert Bbox.intersection(legend, axis.get_window_extent(renderer)) is None
    plt.close(figure)


# --- 6. the gateway example: a recorded prompt and real prices ----------------------


def test_gateway_example_sends_a_recorded_prompt_and_prices_every_backend(shared_data):
    yaml = pytest.importorskip("yaml", reason="the serve extra provides pyyaml")
    from racer.serve.replay import ReplayBook, estimate_tokens

    text = (REPO_ROOT / "examples" / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    needle = re.search(r'if "(.+?)" in q\)', code).group(1)
    data = load_dataset(shared_data / "routerbench" / "arc_challenge_test.csv")
    prompt = next(q for q in data.queries if needle in q)
    assert ReplayBook(data).find(prompt) is not None  # the replay server answers it

    config = yaml.safe_load((REPO_ROOT / "examples" / "gateway.yaml").read_text())
    assert sorted(b["name"] for b in config["backends"]) == sorted(data.model_names)
    prompt_tokens = np.array([estimate_tokens(q) for q in data.queries])
    for backend in config["backends"]:
        j = data.model_names.index(backend["name"])
        answer_tokens = np.array([estimate_tokens(r or "") for r in data.responses[:, j]])
        priced = (
            prompt_tokens * backend["input_cost_per_token"]
            + answer_tokens * backend["output_cost_per_token"]
        )
        recorded = data.costs[:, j]
        known = np.isfinite(recorded) & (recorded > 0)
        ratio = np.median(priced[known] / recorded[known])
        assert ratio == pytest.approx(1.0, abs=0.01), backend["name"]


def test_calibrate_takes_the_abstention_mode_by_name(shared_data, tmp_path):
    from racer.artifact import load_artifact

    train, test = _arc(shared_data)
    line = _error_line(
        _invoke("calibrate", "--train", train, "--calibration", test, "--abstention", "maybe")
    )
    assert "--abstention takes one of ['flag', 'strict', 'off']" in line
    out = tmp_path / "off"
    result = _invoke(
        "calibrate", "--train", train, "--calibration", test, "--router", "prior",
        "--alpha", "0.3", "--abstention", "off", "--out", out, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    assert load_artifact(out).racer.abstention_mode_ == "off"
