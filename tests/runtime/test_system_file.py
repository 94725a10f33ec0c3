"""The system file: a good one resolves fully; a bad one is refused with file:line: reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flotilla.errors import ConfigError
from flotilla.runtime.settings import Settings
from flotilla.runtime.system_file import ServiceSpec, load_system_file, parse_system

GOOD = """\
# a comment
[system]
name = "hello"

[services.greeter]
class = "hello.greeter:Greeter"
replicas = 2
env = { GREETING = "Hello" }

[services.front]
class = "front:Front"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flotilla.toml"
    path.write_text(text)
    return path


def refusal(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_system_file(path)
    assert caught.value.code == "invalid_config"
    prefix = f"{path}:"
    assert caught.value.message.startswith(prefix)
    return caught.value.message.removeprefix(prefix)


def test_a_good_file_resolves_paths_and_defaults(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    spec = load_system_file(tmp_path)  # the directory names its flotilla.toml
    assert spec.name == "hello"
    assert spec.data_dir == tmp_path / ".flotilla"
    assert spec.registry == f"sqlite://{tmp_path / '.flotilla' / 'registry.db'}"
    assert spec.events == f"sqlite://{tmp_path / '.flotilla' / 'events.db'}"
    assert list(spec.services) == ["greeter", "front"]  # the file's order
    assert spec.services["greeter"] == ServiceSpec(
        class_="hello.greeter:Greeter", replicas=2, env={"GREETING": "Hello"}
    )
    assert spec.services["front"] == ServiceSpec(class_="front:Front")


def test_defaults_name_from_directory_and_paths_relative_to_it(tmp_path: Path) -> None:
    system = tmp_path / "shop"
    system.mkdir()
    text = '[system]\ndata_dir = "state"\nregistry = "sqlite://reg/x.db"\n'
    text += '[services.a]\nclass = "a:A"\n'
    write(system, text)
    spec = load_system_file(system / "flotilla.toml")
    assert spec.name == "shop"
    assert spec.data_dir == system / "state"
    # Relative to the system, not to wherever `flotilla run` was started.
    assert spec.registry == f"sqlite://{system / 'reg' / 'x.db'}"


def test_other_registry_urls_are_kept_as_written() -> None:
    text = '[system]\nregistry = "memory://"\n[services.a]\nclass = "a:A"\n'
    spec = parse_system(text, source="f.toml", system_dir=Path("/srv/x"))
    assert spec.registry == "memory://"


def test_the_events_url_is_read_and_anchored_like_the_registry() -> None:
    text = '[system]\nevents = "state/ev.db"\n[services.a]\nclass = "a:A"\n'
    spec = parse_system(text, source="f.toml", system_dir=Path("/srv/x"))
    assert spec.events == "sqlite:///srv/x/state/ev.db"
    assert spec.where("system.events") == "f.toml:2: system.events"
    text = '[system]\nevents = "nats://10.0.0.1:4222"\n[services.a]\nclass = "a:A"\n'
    assert parse_system(text, source="f.toml", system_dir=Path("/")).events.startswith("nats://")


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    message = refusal(tmp_path, '[system]\nname = "x"\n\n[services.a]\nclass = "a:A" oops\n')
    assert message.startswith("5: ")
    assert "(column" in message


def test_syntax_error_at_end_of_file_names_the_last_line(tmp_path: Path) -> None:
    message = refusal(tmp_path, '[services.a]\nclass = "a:A"\nreplicas = \n')
    assert message.startswith("3: ")


def test_wrong_type_names_the_key_line(tmp_path: Path) -> None:
    text = GOOD.replace("replicas = 2", 'replicas = "2"')
    assert refusal(tmp_path, text) == ("7: services.greeter.replicas: Expected `int`, got `str`")


def test_wrong_type_of_an_env_value_names_the_variable(tmp_path: Path) -> None:
    text = GOOD.replace('env = { GREETING = "Hello" }', "env = { GREETING = 1 }")
    assert refusal(tmp_path, text) == (
        "8: services.greeter.env.GREETING: Expected `str`, got `int`"
    )


def test_unknown_key_in_a_service_names_its_line(tmp_path: Path) -> None:
    text = GOOD.replace("replicas = 2", "replicas = 2\nreplica = 3")
    message = refusal(tmp_path, text)
    assert message == "8: services.greeter.replica: Object contains unknown field `replica`"


def test_unknown_key_in_system_and_unknown_table(tmp_path: Path) -> None:
    text = GOOD.replace('name = "hello"', 'name = "hello"\nregstry = "x"')
    assert refusal(tmp_path, text).startswith("4: system.regstry: ")
    assert refusal(tmp_path, GOOD + "\n[sevrices.x]\n").startswith("13: sevrices: ")


def test_replicas_must_be_at_least_one(tmp_path: Path) -> None:
    text = GOOD.replace("replicas = 2", "replicas = 0")
    assert refusal(tmp_path, text) == "7: services.greeter.replicas: Expected `int` >= 1"


def test_class_must_be_module_colon_class(tmp_path: Path) -> None:
    text = GOOD.replace("hello.greeter:Greeter", "hello.greeter.Greeter")
    assert refusal(tmp_path, text) == (
        "6: services.greeter.class: 'hello.greeter.Greeter' is not 'module:Class'"
    )


def test_missing_class_names_the_table(tmp_path: Path) -> None:
    text = GOOD.replace('class = "front:Front"', "replicas = 1")
    assert refusal(tmp_path, text) == ("10: services.front: Object missing required field `class`")


def test_inline_service_table_points_at_its_line(tmp_path: Path) -> None:
    text = '[services]\nok = { class = "a:A" }\nbad = { class = "a:A", replicas = true }\n'
    assert refusal(tmp_path, text) == "3: services.bad.replicas: Expected `int`, got `bool`"


def test_a_system_needs_a_service(tmp_path: Path) -> None:
    assert "at least one [services.NAME]" in refusal(tmp_path, '[system]\nname = "x"\n')


def test_service_names_must_be_usable_as_process_names(tmp_path: Path) -> None:
    text = '[services."a b"]\nclass = "a:A"\n'
    assert refusal(tmp_path, text).startswith("1: services.a b: service name must match")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_system_file(tmp_path / "nowhere")
    assert caught.value.message.startswith(
        f"{tmp_path / 'nowhere' / 'flotilla.toml'}: no such file"
    )


def test_replicas_are_bounded(tmp_path: Path) -> None:
    text = GOOD.replace("replicas = 2", "replicas = 100000000000")
    assert refusal(tmp_path, text) == "7: services.greeter.replicas: Expected `int` <= 64"
    assert load_system_file(write(tmp_path, GOOD.replace("replicas = 2", "replicas = 64")))


def test_where_names_the_line_of_a_key(tmp_path: Path) -> None:
    spec = load_system_file(write(tmp_path, GOOD))
    path = tmp_path / "flotilla.toml"
    assert spec.where("services.greeter.class") == f"{path}:6: services.greeter.class"
    assert spec.where("services.front.class") == f"{path}:11: services.front.class"
    assert spec.where("system.registry") == f"{path}:2: system.registry"  # its table


def test_a_data_dir_given_replaces_the_files(tmp_path: Path) -> None:
    spec = load_system_file(write(tmp_path, GOOD), data_dir=tmp_path / "other")
    assert spec.data_dir == tmp_path / "other"
    assert spec.registry == f"sqlite://{tmp_path / 'other' / 'registry.db'}"


CALLS = """\
[system]
strategy = "round_robin"
default_timeout = 4.0

[system.strategies]
carts = "consistent_hash:cart_id"

[services.front]
class = "front:Front"
strategies = { carts = "random" }
default_timeout = 2.5

[services.back]
class = "back:Back"
"""


def test_call_options_reach_each_service_as_environment(tmp_path: Path) -> None:
    spec = load_system_file(write(tmp_path, CALLS))
    front = spec.call_environment("front")
    assert front["FLOTILLA_STRATEGY"] == "round_robin"
    assert json.loads(front["FLOTILLA_STRATEGIES"]) == {"carts": "random"}
    assert float(front["FLOTILLA_DEFAULT_TIMEOUT"]) == 2.5
    back = spec.call_environment("back")
    assert json.loads(back["FLOTILLA_STRATEGIES"]) == {"carts": "consistent_hash:cart_id"}
    assert float(back["FLOTILLA_DEFAULT_TIMEOUT"]) == 4.0
    assert front["FLOTILLA_OPS_PORT"] == "0"  # every replica an ops port of its own
    assert json.loads(front["FLOTILLA_RESILIENCE"])["services"] == {}
    # What a process does with them: the node's configuration.
    settings = Settings.from_env({**front, "FLOTILLA_SECRET": "s", "FLOTILLA_DATA_DIR": "x"})
    config = settings.node_config()
    assert config.ops_port == 0
    assert config.resilience == spec.resilience
    assert (config.strategy, config.strategies, config.default_timeout) == (
        "round_robin",
        {"carts": "random"},
        2.5,
    )


def test_an_unknown_strategy_is_refused_at_its_line(tmp_path: Path) -> None:
    text = CALLS.replace('carts = "random"', 'carts = "fastest"')
    message = refusal(tmp_path, text)
    assert message.startswith("10: services.front.strategies.carts: unknown balancing strategy")


def test_defaults_for_call_options(tmp_path: Path) -> None:
    spec = load_system_file(write(tmp_path, '[services.a]\nclass = "a:A"\n'))
    env = spec.call_environment("a")
    assert env["FLOTILLA_STRATEGY"] == "p2c"
    assert json.loads(env["FLOTILLA_STRATEGIES"]) == {}
    assert float(env["FLOTILLA_DEFAULT_TIMEOUT"]) == 10.0


def test_a_services_database_is_passed_to_its_processes(tmp_path: Path) -> None:
    text = GOOD + 'database = "state/front.db"\n'  # the last table is [services.front]
    spec = parse_system(text, source="f.toml", system_dir=tmp_path)
    assert spec.services["front"].database == f"sqlite://{tmp_path / 'state/front.db'}"
    env = spec.call_environment("front")
    assert env["FLOTILLA_DATABASE_URL_FRONT"] == spec.services["front"].database
    assert not any(
        name.startswith("FLOTILLA_DATABASE") for name in spec.call_environment("greeter")
    )


def test_a_server_database_url_is_kept_as_written(tmp_path: Path) -> None:
    text = GOOD + 'database = "postgresql://app@db:5432/front"\n'
    spec = parse_system(text, source="f.toml", system_dir=tmp_path)
    assert spec.services["front"].database == "postgresql://app@db:5432/front"


def test_a_database_url_of_unknown_scheme_names_its_line(tmp_path: Path) -> None:
    message = refusal(tmp_path, GOOD + 'database = "mysql://app:pw@db/front"\n')
    assert message.startswith(
        "12: services.front.database: database URL 'mysql://app:***@db/front'"
    )


def test_the_systems_database_is_read_and_anchored(tmp_path: Path) -> None:
    text = GOOD.replace('name = "hello"', 'name = "hello"\ndatabase = "sqlite://state"')
    spec = parse_system(text, source="f.toml", system_dir=tmp_path)
    assert spec.database == f"sqlite://{tmp_path / 'state'}"
    assert spec.where("system.database") == "f.toml:4: system.database"


def test_a_systems_database_of_unknown_scheme_names_its_line(tmp_path: Path) -> None:
    text = GOOD.replace('name = "hello"', 'name = "hello"\ndatabase = "mysql://db/x"')
    assert refusal(tmp_path, text).startswith("4: system.database: database URL 'mysql://db/x'")


def test_a_gateway_table_is_read_and_passed_to_its_process(tmp_path: Path) -> None:
    text = GOOD + '\n[gateway]\nroutes = "front.routes:ROUTES"\nport = 9000\nrate = 0\n'
    spec = load_system_file(write(tmp_path, text))
    assert spec.gateway is not None
    assert (spec.gateway.routes, spec.gateway.port, spec.gateway.rate) == (
        "front.routes:ROUTES",
        9000,
        0.0,
    )
    env = spec.call_environment("gateway")
    assert json.loads(env["FLOTILLA_GATEWAY"])["routes"] == "front.routes:ROUTES"
    assert "FLOTILLA_GATEWAY" not in spec.call_environment("front")
    assert load_system_file(write(tmp_path, GOOD)).gateway is None


def test_a_bad_gateway_table_names_its_line(tmp_path: Path) -> None:
    text = GOOD + '\n[gateway]\nroutes = "front.routes:ROUTES"\nport = 70000\n'
    assert refusal(tmp_path, text) == "15: gateway.port: Expected `int` <= 65535"
    missing = refusal(tmp_path, GOOD + "\n[gateway]\nport = 80\n")
    assert "gateway: Object missing required field `routes`" in missing
    unknown = refusal(tmp_path, GOOD + '\n[gateway]\nroutes = "a:B"\nroute = "x"\n')
    assert unknown == "15: gateway.route: Object contains unknown field `route`"
    named = GOOD + '\n[services.gateway]\nclass = "a:B"\n[gateway]\nroutes = "a:B"\n'
    assert "services.gateway: a service may not be named 'gateway'" in refusal(tmp_path, named)


def test_the_event_policies_reach_every_process_as_their_variables(tmp_path: Path) -> None:
    text = GOOD + "\n[events]\ndelivery = { max_deliveries = 3, ack_wait = 5.0 }\n"
    text += "relay = { lease = 2.0 }\n"
    spec = parse_system(text, source="f.toml", system_dir=tmp_path)
    for entry in ("greeter", "front"):
        env = spec.call_environment(entry)
        settings = Settings.from_env({**env, "FLOTILLA_SECRET": "s"})
        assert (settings.delivery.max_deliveries, settings.delivery.ack_wait) == (3, 5.0)
        assert settings.relay.lease == 2.0
    assert "FLOTILLA_DELIVERY" not in parse_system(
        GOOD, source="f.toml", system_dir=tmp_path
    ).call_environment("front")


def test_a_bad_event_policy_names_its_line(tmp_path: Path) -> None:
    assert refusal(tmp_path, GOOD + "\n[events]\nrelay = { lease = 'x' }\n").startswith(
        "14: events.relay.lease: Expected `float`, got `str`"
    )
    assert refusal(tmp_path, GOOD + "\n[events]\ndelivery = { max_deliveries = 0 }\n").startswith(
        "13: events: delivery: max_deliveries must be at least 1"
    )
