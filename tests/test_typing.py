"""Static typing for users: ``py.typed`` ships, and the mypy plugin types ``ctx.client(Service)``.

One mypy run over a small user module checks everything at once (mypy is slow
to start); each expectation names the line it is about.
"""

from __future__ import annotations

import importlib.resources
import re
import textwrap

import pytest
from mypy import api

USER_MODULE = """
from __future__ import annotations

from flotilla import Context, Service, rpc
from flotilla.resilience.policy import Policy, RetryPolicy


class Inventory(Service, name="inventory"):
    @rpc
    async def stock(self, ctx: Context, sku: int) -> int:
        return sku

    @rpc(idempotent=True, timeout=2)
    async def names(self, prefix: str = "") -> list[str]:
        return [prefix]

    async def helper(self) -> None:
        pass


class Shop(Service, name="shop"):
    @rpc
    async def buy(self, ctx: Context, sku: int) -> int:
        inventory = ctx.client(Inventory)
        reveal_type(await inventory.stock(sku=5))  # line: revealed-int
        reveal_type(await inventory.names())  # line: revealed-list
        ok: int = await inventory.stock(sku=sku)  # line: correct
        await inventory.stock(sku="x")  # line: wrong-type
        await inventory.stok(sku=5)  # line: misspelt
        await inventory.helper()  # line: not-rpc
        quick = Policy(retry=RetryPolicy(max_attempts=1))
        once = ctx.client(Inventory, policy=quick).with_policy(None)
        reveal_type(await once.stock(sku=5))  # line: revealed-with-policy
        return ok
"""


def line_of(tag: str) -> int:
    for number, text in enumerate(textwrap.dedent(USER_MODULE).splitlines(), start=1):
        if text.endswith(f"# line: {tag}"):
            return number
    raise AssertionError(f"no line tagged {tag}")


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[str]]:
    """mypy's messages on the user module, by line number."""
    root = tmp_path_factory.mktemp("typing")
    module = root / "shop_app.py"
    module.write_text(textwrap.dedent(USER_MODULE))
    config = root / "mypy.ini"
    config.write_text("[mypy]\nplugins = flotilla.mypy_plugin\nstrict = true\n")
    stdout, stderr, _ = api.run(
        [
            "--config-file",
            str(config),
            "--cache-dir",
            str(root / "cache"),
            "--no-error-summary",
            "--show-error-codes",
            str(module),
        ]
    )
    assert stderr == ""
    by_line: dict[int, list[str]] = {}
    for message in stdout.splitlines():
        match = re.match(r".*shop_app\.py:(\d+): (.*)$", message)
        assert match, f"unexpected mypy output: {message}"
        # mypy before 2.0 spelt builtins in full ("builtins.int").
        by_line.setdefault(int(match[1]), []).append(match[2].replace("builtins.", ""))
    return by_line


def test_the_package_is_marked_typed() -> None:
    assert importlib.resources.files("flotilla").joinpath("py.typed").is_file()


def test_a_client_method_returns_the_method_result_type(mypy_output: dict[int, list[str]]) -> None:
    assert mypy_output[line_of("revealed-int")] == ['note: Revealed type is "int"']
    assert mypy_output[line_of("revealed-list")] == ['note: Revealed type is "list[str]"']


def test_a_client_with_a_policy_keeps_its_typed_methods(
    mypy_output: dict[int, list[str]],
) -> None:
    assert mypy_output[line_of("revealed-with-policy")] == ['note: Revealed type is "int"']


def test_a_correct_call_is_clean(mypy_output: dict[int, list[str]]) -> None:
    assert line_of("correct") not in mypy_output


def test_a_wrong_argument_type_is_an_error(mypy_output: dict[int, list[str]]) -> None:
    (message,) = mypy_output[line_of("wrong-type")]
    assert message.startswith('error: Argument "sku" to "stock"')
    assert '"str"; expected "int"' in message


@pytest.mark.parametrize(("tag", "name"), [("misspelt", "stok"), ("not-rpc", "helper")])
def test_a_name_that_is_no_rpc_method_is_an_error(
    mypy_output: dict[int, list[str]], tag: str, name: str
) -> None:
    assert mypy_output[line_of(tag)] == [
        f'error: "Inventory" has no @rpc method "{name}"  [attr-defined]'
    ]


def test_nothing_else_is_reported(mypy_output: dict[int, list[str]]) -> None:
    tagged = {line_of(tag) for tag in ("revealed-int", "revealed-list", "wrong-type")}
    tagged.add(line_of("revealed-with-policy"))
    tagged |= {line_of("misspelt"), line_of("not-rpc")}
    assert set(mypy_output) == tagged
