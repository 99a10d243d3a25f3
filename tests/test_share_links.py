"""Share-link query parameters (core.exchange.share_links): round-trips, defaults, every bad value named."""
import pytest

from core.config import ConfigError, Phase, RunConfig
from core.exchange.share_links import (config_from_query, config_to_query, is_share_query, schedule_to_query,
                                       share_from_query)


@pytest.mark.parametrize("config", [
    RunConfig(),
    RunConfig(dataset="cifar10", hidden_sizes=(512, 256, 128), activation="gelu", batch_size=1000, lr=0.00123,
              epochs=40, optimizer="sgd_momentum", momentum=0.95, weight_decay=1e-4, device="cpu", seed=123456789,
              val_fraction=0.1, pipeline="dataloader"),
    RunConfig(lr=1 / 3, hidden_sizes=(7,)),
])
def test_share_query_round_trip(config):
    query = config_to_query(config)
    assert all(isinstance(v, str) for v in query.values())
    assert is_share_query(query)
    back = config_from_query(query)
    assert back == config.replace(threads=None)


def test_share_query_is_short_for_defaults_and_ignores_other_parameters():
    query = config_to_query(RunConfig())
    assert set(query) == {"dataset", "hidden", "activation", "batch", "lr", "epochs", "optimizer", "device", "seed",
                          "pipeline"}
    assert not is_share_query({"run": "abc"})
    assert config_from_query({"run": "abc", "lr": "0.1", "hidden": ["32", "64"]}) == RunConfig(lr=0.1,
                                                                                             hidden_sizes=(64,))


def test_invalid_share_query_names_every_bad_value():
    with pytest.raises(ConfigError) as info:
        config_from_query({"lr": "nan", "batch": "0", "activation": "swish", "hidden": "a,b", "epochs": "2.5",
                           "device": "tpu", "momentum": "1.5", "dataset": "mnist"})
    message = str(info.value)
    for fragment in ("lr='nan'", "batch='0'", "activation='swish'", "hidden='a,b'", "epochs='2.5'", "device='tpu'",
                     "momentum='1.5'"):
        assert fragment in message
    assert "dataset" not in message


def test_a_schedule_travels_as_then_after_the_first_phase():
    config = RunConfig(epochs=5, lr=0.5)
    phases = (Phase(5, 0.5), Phase(5, 0.1), Phase(3, 1 / 30))
    query = {**config_to_query(config), **schedule_to_query(phases)}
    assert query["then"].startswith("5@0.1,3@")
    assert share_from_query(query) == (config.replace(threads=None), phases[1:])
    assert schedule_to_query(phases[:1]) == {}
    assert share_from_query(config_to_query(config))[1] == ()
    assert is_share_query({"then": "5@0.1"})


@pytest.mark.parametrize("hidden, says", [("-64", "must be from 1 to 8192; got -64"), ("64,-8", "got -8"),
                                          ("32,,64", "empty size"), ("0x40", "not a whole number")])
def test_a_share_link_width_is_read_exactly_or_refused(hidden, says):
    with pytest.raises(ConfigError) as info:  # before: '-64' was read as 64 ('-' joined sizes), '32,,64' as 32,64
        config_from_query({"hidden": hidden})
    assert f"hidden={hidden!r}: " in str(info.value) and says in str(info.value), str(info.value)
    assert config_from_query({"hidden": "128-64"}).hidden_sizes == (128, 64)  # the CSV's form still reads


@pytest.mark.parametrize("then", ["5", "5@x", "0@0.1", "5@-1"])
def test_a_bad_schedule_in_a_link_is_reported_with_the_other_bad_values(then):
    with pytest.raises(ConfigError) as info:
        share_from_query({"lr": "nan", "then": then})
    assert f"then={then!r}" in str(info.value) and "lr='nan'" in str(info.value)
