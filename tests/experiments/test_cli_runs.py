"""`vifit run`, `validate`, `report` and `--help` end to end, on tiny configs."""

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import vi
from tests.experiments.conftest import REPO, TINY
from vi.cli import main
from vi.experiments import plots, results, runner


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished run of the tiny config: (config path, results directory)."""
    root = tmp_path_factory.mktemp("finished")
    path = root / "tiny.yaml"
    path.write_text(TINY)
    assert main(["run", str(path), "--out", str(root / "out")]) == 0
    return path, root / "out" / "tiny"


def _tree(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and (path.parent.name == "table" or path.name == "metrics.csv")
    }


@pytest.fixture
def count_fits(monkeypatch):
    """Counts the fits the runner computes (``vi.fit`` calls and ``vi.fit_batch`` members)."""
    calls = []
    real_fit, real_batch = vi.fit, vi.fit_batch

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return real_fit(*args, **kwargs)

    def counted_batch(rng_keys, *args, **kwargs):
        calls.extend([kwargs] * len(rng_keys))
        return real_batch(rng_keys, *args, **kwargs)

    monkeypatch.setattr(runner.vi, "fit", counted)
    monkeypatch.setattr(runner.vi, "fit_batch", counted_batch)
    return calls


@pytest.mark.parametrize(
    "argv", [["--help"], ["run", "--help"], ["validate", "--help"], ["report", "--help"]]
)
def test_help_says_what_and_gives_an_example(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "usage: vifit" in out
    assert "example" in out
    assert "vifit " + (argv[0] if argv[0] != "--help" else "run") in out
    assert "vi run" not in out and "vi report" not in out


@pytest.mark.slow
def test_python_dash_m_vi_runs_the_cli_and_its_hints_run_as_printed():
    done = subprocess.run(
        [sys.executable, "-m", "vi", "--help"], capture_output=True, text=True, cwd=REPO, check=True
    )
    command = f"{os.path.relpath(sys.executable, REPO)} -m vi"
    if command.startswith(os.pardir):
        command = f"{sys.executable} -m vi"
    assert f"usage: {command} [-h]" in done.stdout
    assert f"  {command} report results/forward_vs_reverse" in done.stdout


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.heavy
def test_run_writes_the_layout(finished):
    _, results_dir = finished
    names = {p.name for p in results_dir.iterdir()}
    assert {"config.yaml", "provenance.json", "metrics.csv", "table", "figures"} <= names
    assert "report.md" in names
    # One group of two seeds, fitted as one batch: one part of the table.
    (path,) = (results_dir / "table").iterdir()
    assert path.name.startswith("part-") and path.suffix == ".npz"
    table = results.Table(results.Layout(results_dir))
    with np.load(path) as part:
        run_ids = part["run_id"].tolist()
        assert part["trace_end"].shape == (2,) and part["params.loc"].shape == (2, 2)
    assert len(run_ids) == 2 and all(run_id in table for run_id in run_ids)
    record = table.record(run_ids[0])
    assert {"run_id", "config", "params", "fit", "diagnostics"} <= set(record)
    assert record["run_id"] == run_ids[0] and record["config"]["seed"] == 0
    assert table.trace(run_ids[0]).ndim == 1
    lines = (results_dir / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("run_id,point,objective,seed,")
    assert len(lines) == 3
    for figure in ("contours.png", "traces.png", "metrics.png"):
        assert (results_dir / "figures" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    provenance = json.loads((results_dir / "provenance.json").read_text())
    assert provenance["seeds"] == [0, 1]
    assert main(["validate", str(results_dir / "config.yaml")]) == 0


@pytest.mark.heavy
def test_files_are_written_with_the_umask_s_mode(finished):
    _, results_dir = finished
    umask = os.umask(0o022)
    os.umask(umask)
    files = [path for path in results_dir.rglob("*") if path.is_file()]
    assert {path.name for path in files} >= {"metrics.csv", "report.md", "traces.png"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


@pytest.mark.heavy
def test_a_rerun_that_adds_seeds_rewrites_the_report(finished, tmp_path):
    path, first = finished
    copy = tmp_path / "tiny"
    shutil.copytree(first, copy)
    assert "| bimodal_2d | reverse KL (stochastic) | 2 |" in (copy / "report.md").read_text()
    assert main(["run", str(path), "--out", str(tmp_path), "--set", "seeds=[0, 1, 2]"]) == 0
    report = (copy / "report.md").read_text()
    assert "| bimodal_2d | reverse KL (stochastic) | 3 |" in report
    assert "(3 runs)" in report


@pytest.mark.heavy
def test_same_config_twice_gives_byte_identical_results(finished, tmp_path):
    path, first = finished
    assert main(["run", str(path), "--out", str(tmp_path)]) == 0
    second = tmp_path / "tiny"
    assert _tree(first) == _tree(second)
    assert len(_tree(first)) == 2  # metrics.csv and the table's one part

    # The stored config holds no machine path: the same bytes wherever the results went.
    assert (first / "config.yaml").read_bytes() == (second / "config.yaml").read_bytes()
    assert "output:" not in (first / "config.yaml").read_text()


@pytest.mark.heavy
def test_rerun_skips_done_runs(finished, tmp_path, count_fits, capsys):
    path, first = finished
    copy = tmp_path / "tiny"
    shutil.copytree(first, copy)
    before = _tree(copy)
    assert main(["run", str(path), "--out", str(tmp_path)]) == 0
    assert count_fits == []
    assert "2 done already, skipped" in capsys.readouterr().err
    assert _tree(copy) == before


@pytest.mark.heavy
def test_force_reruns_and_gives_the_same_files(finished, tmp_path, count_fits, capsys):
    path, first = finished
    shutil.copytree(first, tmp_path / "tiny")
    assert main(["run", str(path), "--out", str(tmp_path), "--force"]) == 0
    assert len(count_fits) == 2
    err = capsys.readouterr().err
    assert "[0/2]" in err and "[2/2]" in err
    # Each long step is announced before it starts; a chunk's seeds end together.
    lines = err.splitlines()
    fitting = next(i for i, line in enumerate(lines) if line.endswith(": fitting 2 seeds…"))
    assert lines[fitting + 1].startswith("[2/2]") and lines[fitting + 1].endswith("2 seeds done")
    assert any("drawing the figures and writing" in line for line in lines)
    assert lines[-1] == f"vifit: report: {tmp_path / 'tiny' / 'report.md'}"
    assert _tree(tmp_path / "tiny") == _tree(first)


@pytest.mark.heavy
def test_a_missing_part_is_rewritten_alone(finished, tmp_path, count_fits):
    """The table's one part is lost: the rerun fits its group again (one batch of both
    seeds) and writes it byte for byte."""
    path, first = finished
    copy = tmp_path / "tiny"
    shutil.copytree(first, copy)
    (victim,) = sorted((copy / "table").glob("part-*.npz"))
    victim.unlink()
    assert main(["run", str(path), "--out", str(tmp_path)]) == 0
    assert len(count_fits) == 2  # the group's two seeds, one batch
    assert _tree(copy) == _tree(first)


@pytest.mark.heavy
def test_report_has_the_table_and_figures(finished, tmp_path, capsys):
    _, first = finished
    copy = tmp_path / "tiny"
    shutil.copytree(first, copy)
    assert main(["report", str(copy)]) == 0
    report = (copy / "report.md").read_text()
    assert "| target / point | objective | seeds |" in report
    assert "| bimodal_2d | reverse KL (stochastic) | 2 |" in report
    assert "![" in report and "(figures/contours.png)" in report
    assert "```yaml" in report
    capsys.readouterr()
    assert main(["report", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no metrics.csv" in err[0]


def test_report_headings_keep_the_point_labels(tmp_path):
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "marginals_01_funnel_10_D.png").write_bytes(b"")
    (tmp_path / "metrics.csv").write_text(
        'run_id,point,objective,seed\na,"bimodal, wide",r,0\nb,funnel (10-D),r,0\n'
    )
    assert main(["report", str(tmp_path)]) == 0
    assert "### Marginals: funnel (10-D)\n" in (tmp_path / "report.md").read_text()


def test_traces_fill_a_grid_of_points_by_objectives_without_empty_panels():
    panel = lambda point, objective: plots.TracePanel(point, objective, "ELBO", [])
    two = [panel(point, objective) for point in "abc" for objective in ("r", "f")]
    assert [[p.objective for p in row] for row in plots._trace_grid(two)] == [["r", "f"]] * 3
    one = [panel(point, "r") for point in "abcd"]
    assert [len(row) for row in plots._trace_grid(one)] == [3, 3]


@pytest.mark.heavy
def test_numpyro_model_with_nuts_draws(tmp_path, write_config, count_fits, capsys):
    data = REPO / "configs" / "data" / "eight_schools.json"
    path = write_config(
        f"""\
        name: schools
        target: {{model: eight_schools, data: {data}, args: [sigma], kwargs: {{y: y}}}}
        objectives: [{{name: forward_kl, estimator: nuts}}]
        optimizer: {{name: adam, learning_rate: 0.05}}
        stopping: {{max_steps: 10}}
        num_samples: 4
        seeds: [0]
        reference: {{num_draws: 20, num_warmup: 10}}
        diagnostics: {{num_samples: 32}}
        plots: {{coordinates: [0, 1]}}
        """
    )
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 0
    assert "drawing 20 NUTS reference draws (seed 0, after 10 warm-up steps)…" in (
        capsys.readouterr().err
    )
    [objective] = [call["objective"] for call in count_fits]
    assert isinstance(objective, vi.ForwardKL) and isinstance(objective.estimator, vi.Draws)
    assert objective.estimator.draws.shape == (20, 10)
    results_dir = out / "schools"
    assert len(list((results_dir / "reference").glob("*.npy"))) == 1
    assert len(list((results_dir / "figures").glob("marginals_*.png"))) == 1
    assert not (results_dir / "figures" / "contours.png").exists()
    rows = (results_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2
    assert main(["run", str(path), "--out", str(out)]) == 0
    assert len(count_fits) == 1
    assert "reference draws" not in capsys.readouterr().err  # cached on disk


def test_asking_for_a_gpu_where_there_is_none_is_one_line_and_writes_nothing(
    tmp_path, write_config, capsys
):
    out = tmp_path / "out"
    assert main(["run", str(write_config(TINY)), "--out", str(out), "--devices", "gpu"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "devices: 'gpu': JAX sees no GPU here" in errors[0]
    assert "pip install -e '.[cuda]'" in errors[0]
    assert not out.exists()


@pytest.mark.heavy
def test_devices_choose_where_the_fits_run(tmp_path, write_config, count_fits, capsys):
    """``--devices cpu`` sends the batch to the CPU devices, and where the fits ran does
    not name the runs."""
    path = write_config(TINY)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--devices", "cpu"]) == 0
    assert count_fits and all(call["devices"] == jax.devices("cpu") for call in count_fits)
    assert "on 2 cpu device(s)" in capsys.readouterr().err
    # Where the fits ran does not name the runs: a rerun elsewhere finds them done.
    assert main(["run", str(path), "--out", str(out)]) == 0
    assert len(count_fits) == 2  # the two seeds, fitted once


@pytest.mark.heavy
def test_renyi_and_importance_weighted_objectives_run_from_a_config(
    tmp_path, write_config, count_fits
):
    path = write_config(
        TINY.replace(
            "  - {name: reverse_kl, method: stochastic}",
            "  - {name: renyi, alpha: 0.5, num_particles: 2}\n"
            "  - {name: importance_weighted, num_particles: 4, doubly_reparameterised: true}\n"
            "  - {name: renyi, alpha: -1, num_particles: 2}\n"
            "  - {name: renyi, alpha: -2, num_particles: 2, estimator: draws}",
        )
    )
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 0
    objectives = [call["objective"] for call in count_fits]
    assert vi.Renyi(0.5, num_particles=2) in objectives
    assert vi.ImportanceWeighted(4, doubly_reparameterised=True) in objectives
    assert vi.Renyi(-1.0, num_particles=2, estimator=vi.Exact()) in objectives
    pooled = [o for o in objectives if isinstance(o, vi.Renyi) and o.alpha == -2]
    assert len(pooled) == 2 and all(isinstance(o.estimator, vi.Draws) for o in pooled)
    assert pooled[0].estimator.draws.shape[1] == 2
    rows = (out / "tiny" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 * 2
    assert any("Rényi (α=-1, K=2)" in row for row in rows)
    assert any("Rényi (α=0.5, K=2)" in row for row in rows)
    assert any("IW (K=4, DReG)" in row for row in rows)


@pytest.mark.heavy
def test_a_config_chooses_the_family_and_its_fits_are_stored_whole(tmp_path):
    """A sweep over families: the full-rank and low-rank runs record their family and store
    their parameters by field, whole, so that they read back into the family's type."""
    path = tmp_path / "families.yaml"
    path.write_text(
        TINY + "sweep:\n  family: [full_rank_gaussian, {name: low_rank_gaussian, rank: 1}]\n"
    )
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 0
    results_dir = tmp_path / "out" / "tiny"
    table = results.Table(results.Layout(results_dir))
    run_ids = [row["run_id"] for row in results.read_metrics(results_dir / "metrics.csv")]
    records = [table.record(run_id) for run_id in run_ids]
    assert len(records) == 4
    for record in records:
        kind = vi.FullRankParams if "off_diag" in record["params"] else vi.LowRankParams
        params = kind(**{k: np.asarray(v, np.float32) for k, v in record["params"].items()})
        want = (
            "full_rank_gaussian"
            if kind is vi.FullRankParams
            else {"name": "low_rank_gaussian", "rank": 1}
        )
        assert record["config"]["family"] == want
        assert params.loc.shape == (2,) and np.isfinite(float(vi.kl(params, vi.StandardNormal())))
        assert np.isfinite(record["diagnostics"]["kl_qp"])
    assert (results_dir / "figures" / "contours.png").is_file()


def test_a_second_run_on_the_same_output_stops_with_a_message(write_config, tmp_path, capsys):
    """While one run holds the results directory, another on the same --out changes
    nothing there (not even the first one's temporary files) and says who holds it."""
    path = write_config(TINY)
    layout = results.Layout(tmp_path / "out" / "tiny")
    with results.locked(layout):
        partial = layout.root / ".metrics.csv.abc.partial"
        partial.write_text("being written")
        assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 1
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(err) == 1 and f"another vifit run (pid {os.getpid()})" in err[0]
        assert partial.exists() and not layout.table.exists()
    with results.locked(layout):  # let go when the holder is done
        pass


def test_file_system_errors_are_one_line_that_names_the_path(
    write_config, tmp_path, monkeypatch, capsys
):
    """An --out that is a file, a results folder whose place is taken by a file, and a full
    disk: each is one line with the path, the system's reason and what to do; exit 1."""
    path = write_config(TINY)
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "tiny").write_text("a file where the results folder goes")

    def full_disk(target, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    cases = [
        (a_file, None, [str(a_file), "a file is in the way"]),
        (taken, None, [str(taken / "tiny"), "a file is in the way"]),
        (tmp_path / "full", full_disk, ["No space left on device", "finished runs are kept"]),
    ]
    for out, patch, fragments in cases:
        if patch is not None:
            monkeypatch.setattr(results, "atomic_write", patch)
        assert main(["run", str(path), "--out", str(out)]) == 1
        err = [line for line in capsys.readouterr().err.splitlines() if "vifit: error:" in line]
        assert len(err) == 1, err
        assert all(fragment in err[0] for fragment in fragments), err[0]


@pytest.mark.slow
def test_nan_in_a_models_data_is_one_line_at_run_time(write_config, tmp_path, capsys):
    """NaN may be how a user marks missing data, so validate lets it through; a model whose
    log density it leaves not finite stops the run with one line, not a traceback."""
    path = write_config(
        "name: m\ntarget: {model: eight_schools, data: nan.json, args: [sigma]}\n"
        "stopping: {max_steps: 20}\n"
    )
    (path.parent / "nan.json").write_text('{"sigma": [1.0, NaN]}')
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "vifit: error:" in line]
    assert len(err) == 1 and "target: eight_schools:" in err[0] and "NaN" in err[0], err
