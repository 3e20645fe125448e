"""A catalogue of broken configs: each fails validation with one clear line and writes nothing."""

import json

import pytest

from tests.experiments.conftest import TINY
from vi.cli import main


def _edit(old: str, new: str) -> str:
    assert old in TINY, old
    return TINY.replace(old, new)


BOMB = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
    f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)
]
"""Nine levels of nine aliases: 9^9 values once expanded, in 10 lines."""

CASES = [
    pytest.param(
        TINY + "optimiser: {name: adam}\n",
        [],
        ["config.yaml:12:", "optimiser", "unknown key", "did you mean 'optimizer'?"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        _edit("stopping: {max_steps: 30}", "stopping: {max_step: 30}"),
        [],
        [
            "config.yaml:8:",
            "stopping.max_step",
            "did you mean 'max_steps'?",
            "allowed: max_steps, tol",
        ],
        id="unknown-nested-key",
    ),
    pytest.param(
        _edit("learning_rate: 0.05", "learnig_rate: 0.05"),
        [],
        [
            "optimizer.learnig_rate",
            "not an argument of optax.adam",
            "did you mean 'learning_rate'?",
        ],
        id="unknown-optimizer-argument",
    ),
    pytest.param(
        _edit("seeds: [0, 1]", "seeds: lots"),
        [],
        ["config.yaml:10:", "seeds", "expected a non-empty list of seeds", "the string 'lots'"],
        id="wrong-type-seeds",
    ),
    pytest.param(
        _edit("max_steps: 30", "max_steps: 1.5"),
        [],
        ["stopping.max_steps", "expected an integer, got the number 1.5"],
        id="wrong-type-integer",
    ),
    pytest.param(
        _edit("params: {separation: 3.0}", "params: {separation: [far]}"),
        [],
        ["target.params.separation.0", "expected a number"],
        id="wrong-type-target-param",
    ),
    pytest.param(
        _edit("max_steps: 30", "max_steps: 0"),
        [],
        ["stopping.max_steps", "must be at least 1, got 0"],
        id="range-max-steps",
    ),
    pytest.param(
        _edit("learning_rate: 0.05", "learning_rate: -0.1"),
        [],
        ["optimizer.learning_rate", "must be positive"],
        id="range-learning-rate",
    ),
    pytest.param(
        _edit("seeds: [0, 1]", "seeds: {start: 3, stop: 1}"),
        [],
        ["seeds.stop", "must be at least 4"],
        id="range-seed-range",
    ),
    pytest.param(
        _edit("num_samples: 4", "num_samples: 1"),
        [],
        ["num_samples", "must be at least 2"],
        id="range-num-samples",
    ),
    pytest.param(
        _edit(
            "name: bimodal_2d\n  params: {separation: 3.0}", "name: banana\n  params: {scale: -1.0}"
        ),
        [],
        ["config.yaml:4:", "target.params", "scale must be positive"],
        id="range-target-value",
    ),
    pytest.param(
        _edit(
            "name: bimodal_2d\n  params: {separation: 3.0}",
            "name: gaussian_mixture\n  params: {weights: [0.6, 0.6], means: [[0.0], [1.0]], "
            "covariances: [[[1.0]], [[1.0]]]}",
        ),
        [],
        ["target.params", "weights must sum to 1"],
        id="range-mixture-weights",
    ),
    pytest.param(
        _edit("name: bimodal_2d\n  params: {separation: 3.0}", "name: gaussian_mixture"),
        [],
        ["target.params", "needs 'weights', 'means', 'covariances'"],
        id="missing-target-params",
    ),
    pytest.param(
        _edit("name: bimodal_2d", "name: bimodel_2d"),
        [],
        ["target.name", "unknown target 'bimodel_2d'", "did you mean 'bimodal_2d'?", "banana"],
        id="unknown-target",
    ),
    pytest.param(
        _edit("params: {separation: 3.0}", "params: {separaton: 3.0}"),
        [],
        ["target.params.separaton", "did you mean 'separation'?"],
        id="unknown-target-param",
    ),
    pytest.param(
        _edit("{name: adam,", "{name: adamm,"),
        [],
        ["optimizer.name", "unknown optimizer 'adamm'", "did you mean 'adam'?"],
        id="unknown-optimizer",
    ),
    pytest.param(
        _edit("learning_rate: 0.05}", "schedule: {name: cosine_decay, init_value: 0.1}}"),
        [],
        ["optimizer.schedule.name", "unknown schedule", "did you mean 'cosine_decay_schedule'?"],
        id="unknown-schedule",
    ),
    pytest.param(
        _edit("name: reverse_kl, method: stochastic", "name: reverse_KL"),
        [],
        ["objectives.0.name", "'reverse_KL' is not allowed", "did you mean 'reverse_kl'?"],
        id="unknown-objective",
    ),
    pytest.param(
        _edit("method: stochastic", "method: adam"),
        [],
        ["objectives.0.method", "allowed: fixed_draws, stochastic"],
        id="unknown-method",
    ),
    pytest.param(
        _edit("method: stochastic", "estimator: exact"),
        [],
        ["objectives.0.estimator", "applies to forward_kl only"],
        id="estimator-on-reverse",
    ),
    pytest.param(
        _edit("{name: reverse_kl, method: stochastic}", "{name: forward_kl}"),
        [],
        ["objectives.0", "forward_kl needs an estimator", "exact, draws, snis, nuts"],
        id="forward-without-estimator",
    ),
    pytest.param(
        _edit(
            "  - {name: reverse_kl, method: stochastic}",
            "  - {name: reverse_kl, method: stochastic}\n  - {name: reverse_kl, method: stochastic}",
        ),
        [],
        ["objectives.1", "same label as objectives.0"],
        id="duplicate-objective",
    ),
    pytest.param(
        TINY + "devices: tpu\n",
        [],
        ["config.yaml:12:", "devices", "'tpu'", "auto, cpu, gpu"],
        id="unknown-devices",
    ),
    pytest.param(
        TINY + "sweep: {devices: [cpu, auto]}\n",
        [],
        ["sweep.devices", "'devices' cannot be swept"],
        id="devices-swept",
    ),
    pytest.param(
        _edit("{name: reverse_kl, method: stochastic}", "{name: renyi}"),
        [],
        ["objectives.0", "renyi needs alpha (a finite number)"],
        id="renyi-without-alpha",
    ),
    pytest.param(
        _edit(
            "{name: reverse_kl, method: stochastic}", "{name: renyi, alpha: -1, estimator: snis}"
        ),
        [],
        ["objectives.0.estimator", "'snis'", "exact, draws, nuts"],
        id="renyi-negative-alpha-snis",
    ),
    pytest.param(
        _edit(
            "{name: reverse_kl, method: stochastic}", "{name: renyi, alpha: 0.5, estimator: exact}"
        ),
        [],
        ["objectives.0.estimator", "applies to renyi with alpha < 0 only", "alpha is 0.5"],
        id="renyi-estimator-above-zero",
    ),
    pytest.param(
        _edit(
            "{name: reverse_kl, method: stochastic}",
            "{name: importance_weighted, estimator: exact}",
        ),
        [],
        ["objectives.0.estimator", "applies to forward_kl and renyi with alpha < 0 only"],
        id="iw-estimator",
    ),
    pytest.param(
        "name: m\ntarget: {model: eight_schools, data: data.json, args: [sigma]}\n"
        "objectives: [{name: renyi, alpha: -1}]\n",
        [],
        ["objectives.0", "alpha < 0 fits from draws of the target", "estimator: nuts"],
        id="negative-renyi-on-model-without-estimator",
    ),
    pytest.param(
        "name: m\ntarget: {model: eight_schools, data: data.json, args: [sigma]}\n"
        "objectives: [{name: renyi, alpha: -1, estimator: draws}]\n",
        [],
        ["objectives.0.estimator", "needs a built-in target", "'nuts'"],
        id="negative-renyi-draws-on-model",
    ),
    pytest.param(
        _edit("{name: reverse_kl, method: stochastic}", "{name: renyi, alpha: half}"),
        [],
        ["objectives.0.alpha", "the string 'half'"],
        id="renyi-alpha-not-a-number",
    ),
    pytest.param(
        _edit("method: stochastic}", "method: stochastic, alpha: 0.5}"),
        [],
        ["objectives.0.alpha", "applies to renyi only"],
        id="alpha-on-reverse",
    ),
    pytest.param(
        _edit(
            "{name: reverse_kl, method: stochastic}",
            "{name: importance_weighted, num_particles: 0}",
        ),
        [],
        ["objectives.0.num_particles", "at least 1"],
        id="iw-zero-particles",
    ),
    pytest.param(
        TINY + "family: low_rank_gaussian\n",
        [],
        ["family", "low_rank_gaussian needs a rank", "{name: low_rank_gaussian, rank: 5}"],
        id="low-rank-without-rank",
    ),
    pytest.param(
        TINY + "family: {name: low_rank_gaussian, rank: 0}\n",
        [],
        ["family.rank", "at least 1"],
        id="low-rank-rank-zero",
    ),
    pytest.param(
        TINY + "family: {name: full_rank_gaussian, rank: 3}\n",
        [],
        ["family.rank", "applies to low_rank_gaussian only"],
        id="full-rank-with-rank",
    ),
    pytest.param(
        TINY + "family: full_rank\n",
        [],
        ["family", "mean_field_gaussian", "full_rank_gaussian"],
        id="unknown-family",
    ),
    pytest.param(
        _edit("{name: reverse_kl, method: stochastic}", "{name: reverse_kl, method: fixed_draws}")
        + "family: full_rank_gaussian\n",
        [],
        ["objectives.0.method", "fixed_draws fits the mean-field family only"],
        id="fixed-draws-full-rank",
    ),
    pytest.param(
        _edit(
            "{name: reverse_kl, method: stochastic}",
            "{name: importance_weighted, doubly_reparameterised: yes please}",
        ),
        [],
        ["objectives.0.doubly_reparameterised", "must be true or false"],
        id="iw-dreg-not-a-boolean",
    ),
    pytest.param(
        _edit(
            "{name: reverse_kl, method: stochastic}",
            "{name: importance_weighted, method: stochastic}",
        ),
        [],
        ["objectives.0.method", "does not apply to importance_weighted"],
        id="method-on-iw",
    ),
    pytest.param(
        _edit(
            "{name: reverse_kl, method: stochastic}",
            "{name: importance_weighted, num_particles: 3}",
        ),
        [],
        ["num_samples", "must be a multiple of objectives.0.num_particles (3)", "got 4"],
        id="iw-samples-not-a-multiple",
    ),
    pytest.param(
        _edit("method: stochastic}", "method: fixed_draws}").replace(
            "num_samples: 4", "num_samples: 5"
        ),
        [],
        ["num_samples", "even number"],
        id="odd-fixed-draws",
    ),
    pytest.param(
        TINY.replace("name: tiny\n", ""),
        [],
        ["missing required key 'name'"],
        id="missing-name",
    ),
    pytest.param(
        _edit("  name: bimodal_2d\n", "  name: bimodal_2d\n  model: eight_schools\n"),
        [],
        ["target", "give exactly one of 'name'"],
        id="name-and-model",
    ),
    pytest.param(
        "name: tiny\ntarget:\n  name: bimodal_2d\n  params: {separation: [1.0, 2.0\nseeds: [0]\n",
        [],
        ["config.yaml:5:", "malformed YAML"],
        id="malformed-yaml",
    ),
    pytest.param(
        "\n".join(BOMB) + "\n" + TINY,
        [],
        ["config.yaml:", "more than 100,000 values once its aliases", "alias bomb"],
        id="yaml-alias-bomb",
    ),
    pytest.param(
        TINY,
        ["seeds=" + "[" * 60 + "0" + "]" * 60],
        ["--set seeds=", "nests more than 40 levels deep"],
        id="override-nested-too-deep",
    ),
    pytest.param(
        "x: " + "[" * 600 + "]" * 600 + "\n" + TINY,
        [],
        ["config.yaml", "nests deeper than this reader allows"],
        id="yaml-recursion",
    ),
    pytest.param(
        TINY + "seeds: [5]\n",
        [],
        ["config.yaml:12:", "duplicate key 'seeds': first on line 10, again on line 12"],
        id="duplicate-top-level-key",
    ),
    pytest.param(
        _edit("max_steps: 30}", "max_steps: 30, max_steps: 40}"),
        [],
        ["duplicate key 'max_steps'", "first on line 8, again on line 8"],
        id="duplicate-nested-key",
    ),
    pytest.param(
        _edit("seeds: [0, 1]", "seeds: {start: 0, stop: 100000000}"),
        [],
        [
            "seeds",
            "the seeds alone make 100,000,000 runs, over max_runs (100,000)",
            "Raise max_runs",
        ],
        id="seeds-over-max-runs",
    ),
    pytest.param(
        TINY
        + "sweep:\n  optimizer.learning_rate: [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08]\n"
        + "  stopping.max_steps: [10, 20, 30, 40, 50, 60, 70, 80]\n",
        ["max_runs=100"],
        ["sweep", "64 points × 1 objective(s) × 2 seed(s) make 128 runs, over max_runs (100)"],
        id="sweep-over-max-runs",
    ),
    pytest.param(
        TINY + "max_runs: 0\n",
        [],
        ["max_runs", "at least 1"],
        id="max-runs-zero",
    ),
    pytest.param(
        "name: m\ntarget: {model: eight_schools, data: data.json, args: [sigma]}\nseeds: lots\n",
        [],
        ["seeds", "the string 'lots'"],
        id="model-config-bad-seeds",
    ),
    pytest.param(
        _edit("learning_rate: 0.05", "learning_rate: 0.05, eps: abc"),
        [],
        ["optimizer", "optax.adam fails on a trial step", "TypeError"],
        id="optimizer-argument-of-the-wrong-type",
    ),
    pytest.param(
        _edit("max_steps: 30", "max_steps: 100000000000"),
        [],
        ["stopping.max_steps", "must be at most 10,000,000, got 100,000,000,000"],
        id="max-steps-too-many",
    ),
    pytest.param("", [], ["config.yaml", "empty"], id="empty-file"),
    pytest.param(
        "- just\n- a list\n", [], ["expected a mapping of config keys"], id="not-a-mapping"
    ),
    pytest.param(
        "name: m\ntarget:\n  model: eight_schools\n  data: missing.json\n  args: [sigma]\n",
        [],
        ["config.yaml:4:", "target.data", "missing.json", "does not exist"],
        id="missing-data-file",
    ),
    pytest.param(
        "name: m\ntarget:\n  model: eight_schools\n  data: data.json\n  args: [sigmaa]\n",
        [],
        ["target.args.0", "no array 'sigmaa'", "did you mean 'sigma'?"],
        id="unknown-data-array",
    ),
    pytest.param(
        "name: m\ntarget:\n  model: os.path:join()\n",
        [],
        ["target.model", "not an import path"],
        id="import-path-malformed",
    ),
    pytest.param(
        "name: m\ntarget:\n  model: eight_school\n",
        [],
        ["target.model", "unknown model 'eight_school'", "did you mean 'eight_schools'?"],
        id="unknown-model",
    ),
    pytest.param(
        "name: m\ntarget: {model: eight_schools, data: data.json, args: [sigma]}\n"
        "objectives: [{name: forward_kl, estimator: exact}]\n",
        [],
        ["objectives.0.estimator", "needs a built-in target", "'nuts'"],
        id="exact-forward-on-model",
    ),
    pytest.param(
        TINY + "sweep:\n  optimzer.learning_rate: [0.1, 0.2]\n",
        [],
        ["config.yaml:13:", "sweep.optimzer.learning_rate", "did you mean 'optimizer'?"],
        id="sweep-unknown-key",
    ),
    pytest.param(
        TINY + "sweep:\n  stopping.max_steps: [10, -1]\n",
        [],
        ["config.yaml:13:", "at stopping.max_steps=-1", "must be at least 1"],
        id="sweep-bad-value",
    ),
    pytest.param(
        TINY + "sweep:\n  seeds: [[0], [1]]\n",
        [],
        ["sweep.seeds", "cannot be swept"],
        id="sweep-seeds",
    ),
    pytest.param(
        TINY,
        ["optimizer.learning_rate=fast"],
        ["--set optimizer.learning_rate=fast", "expected a finite number", "the string 'fast'"],
        id="override-wrong-type",
    ),
    pytest.param(
        TINY,
        ["optimizer.learnig_rate=0.1"],
        ["--set optimizer.learnig_rate=0.1", "did you mean 'learning_rate'?"],
        id="override-unknown-key",
    ),
    pytest.param(
        TINY,
        ["learning_rate"],
        ["--set learning_rate", "expected KEY=VALUE"],
        id="override-no-equals",
    ),
    pytest.param(
        TINY, ["seeds=[0, 1"], ["--set seeds=[0, 1", "malformed YAML"], id="override-malformed"
    ),
    pytest.param(
        TINY,
        ["objectives.3.method=stochastic"],
        ["cannot index a list of 1"],
        id="override-bad-index",
    ),
]


@pytest.mark.parametrize("text, overrides, fragments", CASES)
@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.slow
def test_broken_config_fails_with_one_clear_line(
    command, text, overrides, fragments, write_config, out_dir, capsys
):
    path = write_config(text)
    (path.parent / "data.json").write_text(json.dumps({"sigma": [1.0, 2.0], "y": [0.0, 1.0]}))
    argv = [command, str(path), *(f"--set={item}" for item in overrides)]
    argv += ["--out", str(out_dir)] if command == "run" else []

    status = main(argv)

    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("vifit: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert not out_dir.exists()


def test_missing_config_file(tmp_path, out_dir, capsys):
    status = main(["run", str(tmp_path / "nope.yaml"), "--out", str(out_dir)])
    err = capsys.readouterr().err
    assert status == 1
    assert "nope.yaml: cannot read the config file" in err
    assert not out_dir.exists()


def test_nothing_in_a_config_is_evaluated(write_config, out_dir, capsys):
    path = write_config(
        TINY.replace("name: tiny", "name: !!python/object/apply:os.system ['true']")
    )
    assert main(["run", str(path), "--out", str(out_dir)]) == 1
    assert "malformed YAML" in capsys.readouterr().err
    assert not out_dir.exists()


EVIL = """\
import pathlib
pathlib.Path("IMPORTED").write_text("top-level code ran")


def model(sigma, y=None):
    pass
"""


def test_a_model_named_by_import_path_is_imported_only_with_trust_code(
    tmp_path, monkeypatch, capsys
):
    """A config that names code is code: validate checks the path's form and never imports
    it; run refuses it without --trust-code (one line, nothing written); with the flag
    the module is imported, and a missing module or attribute is named."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil_models.py").write_text(EVIL)
    (tmp_path / "data.json").write_text(json.dumps({"sigma": [1.0, 2.0]}))
    config = tmp_path / "config.yaml"
    config.write_text(
        "name: m\ntarget: {model: evil_models:model, data: data.json, args: [sigma]}\n"
    )
    out = tmp_path / "out"

    assert main(["validate", str(config)]) == 0
    printed = capsys.readouterr().out
    assert (
        "valid" in printed and "model 'evil_models:model' is code and was not imported" in printed
    )
    assert main(["run", str(config), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "target.model" in err[0] and "--trust-code" in err[0]
    assert "a config that names code runs that code" in err[0]
    assert not (tmp_path / "IMPORTED").exists() and not out.exists()

    for path, fragment in [
        ("no_such_package.models:model", "cannot import 'no_such_package.models'"),
        ("evil_models:no_such_model", "has no attribute 'no_such_model'"),
    ]:
        config.write_text(f"name: m\ntarget: {{model: {path}}}\n")
        assert main(["run", str(config), "--out", str(out), "--trust-code"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], err
    assert (tmp_path / "IMPORTED").exists()  # with the flag, the module was imported
