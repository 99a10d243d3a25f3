import dataclasses
import json
import math

import pytest

from core.config import (TUTORIAL_SCHEDULE, ConfigError, Phase, RunConfig, parse_hidden_sizes, parse_schedule,
                         phases_from_pairs)


def test_defaults_are_the_tutorial_settings():
    c = RunConfig()
    assert c.dataset == "mnist"
    assert c.hidden_sizes == (32,)
    assert c.activation == "relu"
    assert c.batch_size == 100
    assert c.lr == 0.5
    assert c.epochs == 5
    assert c.optimizer == "sgd"
    assert c.val_fraction == 0.2
    assert c.pipeline == "resident"
    assert c.device == "auto"


def test_tutorial_schedule_is_fit_5_at_half_then_5_at_tenth():
    assert TUTORIAL_SCHEDULE == (Phase(5, 0.5), Phase(5, 0.1))
    assert parse_schedule("5@0.5,5@0.1") == TUTORIAL_SCHEDULE


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().lr = 0.1


@pytest.mark.parametrize("field, value", [
    ("dataset", "svhn"),
    ("dataset", "MNIST"),
    ("hidden_sizes", ()),
    ("hidden_sizes", (0,)),
    ("hidden_sizes", (32, -4)),
    ("hidden_sizes", (8193,)),
    ("hidden_sizes", (32,) * 17),
    ("hidden_sizes", (32.5,)),
    ("hidden_sizes", ("32",)),
    ("activation", "swish"),
    ("batch_size", 0),
    ("batch_size", 65537),
    ("batch_size", 10.0),
    ("batch_size", True),
    ("lr", 0),
    ("lr", -0.1),
    ("lr", 10.5),
    ("lr", math.nan),
    ("lr", math.inf),
    ("lr", "0.5"),
    ("epochs", 0),
    ("epochs", 1001),
    ("epochs", 2.0),
    ("optimizer", "rmsprop"),
    ("momentum", 1.0),
    ("momentum", -0.1),
    ("weight_decay", -0.01),
    ("weight_decay", 1.5),
    ("device", "tpu"),
    ("device", "gpu"),
    ("seed", -1),
    ("seed", 1.5),
    ("val_fraction", 0.0),
    ("val_fraction", 0.95),
    ("val_fraction", -0.2),
    ("pipeline", "streaming"),
    ("threads", 0),
    ("threads", 257),
])
def test_invalid_field_raises_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError) as info:
        RunConfig(**{field: value})
    message = str(info.value)
    assert message.startswith(f"{field}:"), message
    assert len(message) > len(field) + 10  # says what is allowed, not just the name


@pytest.mark.parametrize("field, value", [
    ("hidden_sizes", (8192,)),
    ("hidden_sizes", (1,) * 16),
    ("batch_size", 1),
    ("batch_size", 65536),
    ("lr", 10),
    ("lr", 1e-6),
    ("epochs", 1),
    ("epochs", 1000),
    ("momentum", 0.0),
    ("weight_decay", 0.0),
    ("weight_decay", 1.0),
    ("val_fraction", 0.9),
    ("seed", 0),
    ("threads", 1),
    ("threads", None),
])
def test_boundary_values_are_accepted(field, value):
    assert getattr(RunConfig(**{field: value}), field) == value


def test_single_int_hidden_size_becomes_a_tuple():
    assert RunConfig(hidden_sizes=64).hidden_sizes == (64,)
    assert RunConfig(hidden_sizes=[64, 16]).hidden_sizes == (64, 16)


def test_replace_validates():
    c = RunConfig()
    assert c.replace(lr=0.1).lr == 0.1
    assert c.lr == 0.5
    with pytest.raises(ConfigError, match="^batch_size:"):
        c.replace(batch_size=0)


def test_to_dict_from_dict_round_trip_through_json():
    c = RunConfig(dataset="fashion_mnist", hidden_sizes=(128, 64, 32), activation="gelu", batch_size=64, lr=0.01,
                  epochs=7, optimizer="adam", momentum=0.8, weight_decay=1e-4, device="cpu", seed=7,
                  val_fraction=0.1, pipeline="dataloader", threads=2)
    d = c.to_dict()
    assert d["hidden_sizes"] == [128, 64, 32]
    restored = RunConfig.from_dict(json.loads(json.dumps(d)))
    assert restored == c
    assert restored.hidden_sizes == (128, 64, 32)
    assert RunConfig.from_dict(RunConfig().to_dict()) == RunConfig()


def test_from_dict_rejects_unknown_keys_by_name():
    d = RunConfig().to_dict()
    d["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match="learning_rate"):
        RunConfig.from_dict(d)


def test_from_dict_validates_values():
    with pytest.raises(ConfigError, match="^lr:"):
        RunConfig.from_dict({"lr": -1})


def test_from_dict_fills_missing_keys_with_defaults():
    assert RunConfig.from_dict({"lr": 0.1}) == RunConfig(lr=0.1)


def test_describe_names_layers_activation_batch_optimizer_and_lr():
    text = RunConfig(hidden_sizes=(64, 16), activation="tanh", batch_size=50, optimizer="adam", lr=0.01).describe()
    for part in ("mnist", "64-16", "tanh", "50", "adam", "0.01"):
        assert part in text


# -- schedules ----------------------------------------------------------------------------------------
def test_parse_schedule_tutorial():
    phases = parse_schedule("5@0.5,5@0.1")
    assert [(p.epochs, p.lr) for p in phases] == [(5, 0.5), (5, 0.1)]


def test_parse_schedule_tolerates_spaces_and_trailing_comma():
    assert parse_schedule(" 3@0.2 , 1@1e-2 ,") == (Phase(3, 0.2), Phase(1, 0.01))


def test_parse_schedule_single_phase():
    assert parse_schedule("10@0.05") == (Phase(10, 0.05),)


@pytest.mark.parametrize("text", [
    "", " ", ",", "5", "5@", "@0.5", "5@x", "x@0.5", "2.5@0.1", "0@0.5", "5@0", "5@-0.1", "5@11", "5@nan",
    "5@inf", "1001@0.1", "5@0.5@1", "5:0.5", "5@0.5,oops", "5@0.5,,5@0.1", ",5@0.5",
])
def test_bad_schedules_raise_config_error(text):
    with pytest.raises(ConfigError) as info:
        parse_schedule(text)
    assert str(info.value).startswith("schedule:"), str(info.value)


def test_phase_validates():
    with pytest.raises(ConfigError, match="^epochs:"):
        Phase(0, 0.1)
    with pytest.raises(ConfigError, match="^lr:"):
        Phase(1, 0)


def test_phases_from_pairs_reads_a_stored_schedule_with_phase_rules():
    assert phases_from_pairs([[5, 0.5], (3, 0.1)]) == (Phase(5, 0.5), Phase(3, 0.1))
    assert phases_from_pairs([]) == ()


@pytest.mark.parametrize("pairs, says", [
    ([[5, 1e9]], "phase 1: lr: must be in (0, 10]"), ("garbage", "should be a list of [epochs, lr] pairs"),
    ([[5]], "phase 1 should be an [epochs, lr] pair"), ([["a", "b"]], "phase 1: epochs: must be a whole number"),
    ([[5, 0.5], [0, 0.5]], "phase 2: epochs: must be from 1 to 1000; got 0"), ([[5000, 0.5]], "got 5000"),
    ([[5.0, 0.5]], "whole number"), ([[True, 0.5]], "whole number"), (None, "should be a list"),
    ([[5, "0.5"]], "lr: must be a finite number"),
])
def test_phases_from_pairs_refuses_what_phase_refuses(pairs, says):
    with pytest.raises(ConfigError) as info:
        phases_from_pairs(pairs)
    assert str(info.value).startswith("schedule: ") and says in str(info.value), str(info.value)


@pytest.mark.parametrize("text, sizes", [("128,64", (128, 64)), ("128, 64", (128, 64)), ("128 64", (128, 64)),
                                         ("128-64", (128, 64)), ("16,", (16,)), (" 8 ", (8,)),
                                         ("-64", (-64,))])  # a sign is kept, so RunConfig can refuse it
def test_parse_hidden_sizes(text, sizes):
    assert parse_hidden_sizes(text) == sizes


@pytest.mark.parametrize("text", ["", " ", "32,,64", ",64", "abc", "6_4", "+64", "1--2", "64.0", "٣"])
def test_parse_hidden_sizes_refuses_what_it_cannot_read_exactly(text):
    with pytest.raises(ConfigError, match="^hidden_sizes: "):
        parse_hidden_sizes(text)


@pytest.mark.parametrize("data, says", [
    ("mnist", "should be a dict of settings"), ({"hidden_sizes": "32"}, "hidden_sizes: must be a list"),
    ({"hidden_sizes": None}, "hidden_sizes: must be a list"), ({1: 2}, "unknown setting(s): 1"),
    ({"dataset": ["mnist"]}, "dataset: must be one of"), ({"x" * 5000: 1}, "…"),
])
def test_from_dict_refuses_any_value_with_a_short_message(data, says):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(data)
    assert says in str(info.value) and len(str(info.value)) < 200, str(info.value)


def test_project_root_is_where_python_m_core_starts():
    # subprocesses (`python -m core.runs.worker`, the parity check, map jobs) start here; one owner for the path
    from core.config import PROJECT_ROOT
    assert (PROJECT_ROOT / "core" / "__main__.py").is_file() and (PROJECT_ROOT / "dashboard" / "app.py").is_file()
