"""Overrides, sweep expansion, run ids, and the configs shipped in configs/."""

import pytest

from tests.experiments.conftest import REPO, TINY
from vi.cli import main
from vi.experiments import schema
from vi.experiments.config import dump_config, load_experiment, parse_override
from vi.experiments.experiment import plan
from vi.experiments.sweep import grid, set_key, split_key
from vi.experiments.validation import parse_config

SHIPPED = sorted((REPO / "configs").rglob("*.yaml"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("optimizer.learning_rate=0.003", (("optimizer", "learning_rate"), 0.003)),
        ("optimizer.learning_rate=3e-3", (("optimizer", "learning_rate"), 0.003)),
        ("stopping.max_steps=100", (("stopping", "max_steps"), 100)),
        ("stopping.tol=null", (("stopping", "tol"), None)),
        ("seeds=[0, 2]", (("seeds",), [0, 2])),
        ("seeds={start: 0, stop: 3}", (("seeds",), {"start": 0, "stop": 3})),
        ("objectives.0.method=stochastic", (("objectives", 0, "method"), "stochastic")),
        ("precision=float64", (("precision",), "float64")),
        (
            "sweep.target.params.separation=[1.0, 2.0]",
            (("sweep", "target.params.separation"), [1.0, 2.0]),
        ),
        ("name=a=b", (("name",), "a=b")),
    ],
)
def test_override_values_are_read_as_yaml(text, expected):
    assert parse_override(text) == expected


def test_overrides_apply_and_are_validated_like_the_file(write_config):
    path = write_config(TINY)
    experiment = load_experiment(
        path,
        [
            "optimizer.learning_rate=0.003",
            "objectives.0.method=fixed_draws",
            "seeds={start: 2, stop: 5}",
            "stopping.max_steps=7",
            "init.radius=1.5",
        ],
        output="elsewhere",
    )
    config = experiment.config
    assert config.optimizer.learning_rate == 0.003
    assert config.objectives[0].method == "fixed_draws"
    assert config.objectives[0].label == "reverse KL (fixed draws)"
    assert config.seeds == (2, 3, 4)
    assert config.stopping.max_steps == 7
    assert config.init.radius == 1.5
    assert config.output == "elsewhere"


def test_later_overrides_win(write_config):
    path = write_config(TINY)
    experiment = load_experiment(path, ["stopping.max_steps=5", "stopping.max_steps=6"])
    assert experiment.config.stopping.max_steps == 6


def test_sweep_is_the_cartesian_product_in_order(write_config):
    path = write_config(
        TINY
        + "sweep:\n"
        + "  target.params.separation: [2.0, 4.0, 8.0]\n"
        + "  optimizer.learning_rate: [0.1, 0.01]\n"
    )
    experiment = load_experiment(path)
    values = [
        (point.config.target.params["separation"], point.config.optimizer.learning_rate)
        for point in experiment.points
    ]
    assert values == [(2.0, 0.1), (2.0, 0.01), (4.0, 0.1), (4.0, 0.01), (8.0, 0.1), (8.0, 0.01)]
    assert experiment.points[1].label == "bimodal_2d, separation=2.0, learning_rate=0.01"
    assert all(point.config.sweep == {} for point in experiment.points)
    runs = plan(experiment)
    assert len(runs) == 6 * 1 * 2
    assert len({run.run_id for run in runs}) == len(runs)


@pytest.mark.slow
def test_sweep_over_whole_targets_and_override_of_the_sweep(write_config):
    path = write_config(
        TINY
        + "sweep:\n"
        + "  target:\n"
        + "    - {name: banana, label: a banana}\n"
        + "    - {name: bimodal_2d}\n"
    )
    experiment = load_experiment(path)
    assert [point.label for point in experiment.points] == ["a banana", "bimodal_2d"]
    assert experiment.points[0].config.target.name == "banana"

    overridden = load_experiment(path, ["sweep.target=[{name: ring}]"])
    assert [point.config.target.name for point in overridden.points] == ["ring"]


def test_grid_of_an_empty_sweep_is_one_point():
    assert grid({}) == [()]


def test_set_key_copies_and_creates_mappings():
    raw = {"a": {"b": 1}, "c": [{"d": 1}]}
    updated = set_key(raw, ("a", "x", "y"), 2)
    updated = set_key(updated, ("c", 0, "d"), 3)
    assert updated == {"a": {"b": 1, "x": {"y": 2}}, "c": [{"d": 3}]}
    assert raw == {"a": {"b": 1}, "c": [{"d": 1}]}
    assert split_key("objectives.10.label") == ("objectives", 10, "label")


def test_run_ids_ignore_labels_names_and_output_but_not_numbers(write_config):
    base = plan(load_experiment(write_config(TINY)))
    renamed = plan(
        load_experiment(
            write_config(TINY.replace("name: tiny", "name: other"), "b.yaml"),
            ["objectives.0.label=mine", "target.label=t", "plots.coordinates=[0]"],
            output="x",
        )
    )
    changed = plan(load_experiment(write_config(TINY, "c.yaml"), ["optimizer.learning_rate=0.2"]))
    assert [run.run_id for run in base] == [run.run_id for run in renamed]
    assert not {run.run_id for run in base} & {run.run_id for run in changed}


def test_fixed_draw_run_ids_ignore_the_optimizer(write_config):
    path = write_config(TINY)
    first = plan(load_experiment(path, ["objectives.0.method=fixed_draws"]))
    second = plan(
        load_experiment(path, ["objectives.0.method=fixed_draws", "optimizer.learning_rate=0.2"])
    )
    assert [run.run_id for run in first] == [run.run_id for run in second]


def test_schedules_and_optimizer_arguments(write_config):
    path = write_config(
        TINY.replace(
            "optimizer: {name: adam, learning_rate: 0.05}",
            "optimizer:\n  name: sgd\n  momentum: 0.9\n"
            "  schedule: {name: exponential_decay, init_value: 0.1, transition_steps: 10, "
            "decay_rate: 0.5}",
        )
    )
    optimizer = load_experiment(path).config.optimizer
    assert optimizer.name == "sgd"
    assert optimizer.learning_rate is None
    assert dict(optimizer.args) == {"momentum": 0.9}
    assert optimizer.schedule.name == "exponential_decay"


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(REPO)) for p in SHIPPED])
@pytest.mark.slow
def test_shipped_configs_validate_and_round_trip(path, capsys):
    assert main(["validate", str(path)]) == 0
    assert "valid" in capsys.readouterr().out
    experiment = load_experiment(path)
    config = experiment.config
    assert parse_config(schema.to_plain(config), base_dir=path.parent, build=False) == config
    assert dump_config(config) == dump_config(
        parse_config(schema.to_plain(config), base_dir=path.parent, build=False)
    )


def test_shipped_forward_vs_reverse_configs_cover_the_study():
    names = {path.stem for path in (REPO / "configs" / "forward_vs_reverse").glob("*.yaml")}
    assert {
        "default",
        "bimodal",
        "unequal",
        "mixture_10d",
        "banana",
        "funnel",
        "eight_schools",
    } <= names
