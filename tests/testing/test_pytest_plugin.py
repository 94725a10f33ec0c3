"""The pytest plugin: ``async def`` tests run with no configuration, beside pytest-asyncio.

Each test is a fresh pytest run in a subprocess (pytest's own ``pytester``),
so the plugin is found the way a user's pytest finds it: by its entry point.
"""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

README_EXAMPLE = """
import msgspec
from flotilla import Context, NotFound, Service, rpc
from flotilla.testing import Cluster


class Product(msgspec.Struct):
    id: int
    name: str


class Catalog(Service, name="catalog"):
    @rpc(idempotent=True)
    async def get(self, id: int) -> Product:
        if id != 1:
            raise NotFound(f"no product {id}")
        return Product(id=1, name="teapot")


class Shop(Service, name="shop"):
    @rpc
    async def describe(self, ctx: Context, id: int) -> str:
        product = await ctx.client(Catalog).get(id=id)
        return f"#{product.id}: {product.name}"


async def test_describe():
    async with Cluster() as cluster:
        await cluster.add(Catalog, replicas=2)
        await cluster.add(Shop())
        assert await cluster.call("shop.describe", id=1) == "#1: teapot"
"""


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=textwrap.dedent(source))
    # An empty ini file: the run must not pick up this project's configuration.
    pytester.makeini("[pytest]\n")
    return pytester.runpytest_subprocess("-W", "error", "-p", "no:cacheprovider", *args)


def test_the_readme_example_runs_without_pytest_asyncio(pytester: pytest.Pytester) -> None:
    result = run(pytester, README_EXAMPLE, "-p", "no:asyncio")
    result.assert_outcomes(passed=1)


def test_a_failing_async_test_fails(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import asyncio

        async def test_broken():
            await asyncio.sleep(0)
            assert 1 + 1 == 3
        """,
        "-p",
        "no:asyncio",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*assert (1 + 1) == 3*"])


def test_fixtures_reach_the_test_and_the_loop_is_uvloop(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import asyncio

        import pytest

        @pytest.fixture
        def answer():
            return 42

        @pytest.mark.parametrize("n", [1, 2])
        async def test_with_fixtures(answer, n, tmp_path):
            assert answer == 42 and n in (1, 2) and tmp_path.is_dir()
            assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        """,
        "-p",
        "no:asyncio",
    )
    result.assert_outcomes(passed=2)


def test_without_the_plugin_the_test_is_not_run(pytester: pytest.Pytester) -> None:
    # Proves the runs above owe their passes to this plugin, found by its name.
    result = run(
        pytester,
        """
        async def test_unclaimed():
            raise AssertionError("must not run")
        """,
        "-p",
        "no:asyncio",
        "-p",
        "no:flotilla",
    )
    result.stdout.no_fnmatch_line("*must not run*")
    result.stdout.fnmatch_lines(["*async def functions are not natively supported*"])


PYTEST_ASYNCIO_TESTS = """
import asyncio

import pytest
import pytest_asyncio

LOOPS = {}


@pytest_asyncio.fixture
async def fixture_loop():
    return asyncio.get_running_loop()


@pytest.mark.asyncio
async def test_marked(fixture_loop):
    # Ran by pytest-asyncio: on the loop its fixture ran on.
    assert asyncio.get_running_loop() is fixture_loop


async def test_unmarked():
    LOOPS["unmarked"] = asyncio.get_running_loop()
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_pytest_asyncio_keeps_its_tests_and_the_rest_still_run(
    pytester: pytest.Pytester, mode: str
) -> None:
    result = run(
        pytester,
        PYTEST_ASYNCIO_TESTS,
        "-p",
        "asyncio",
        "-o",
        f"asyncio_mode={mode}",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    result.assert_outcomes(passed=2)


def test_in_auto_mode_pytest_asyncio_runs_every_async_test(pytester: pytest.Pytester) -> None:
    # An unmarked test shares the loop of an async fixture only if
    # pytest-asyncio ran it: this plugin would have given it a loop of its own.
    result = run(
        pytester,
        """
        import asyncio

        import pytest_asyncio

        @pytest_asyncio.fixture
        async def fixture_loop():
            return asyncio.get_running_loop()

        async def test_unmarked(fixture_loop):
            assert asyncio.get_running_loop() is fixture_loop
        """,
        "-p",
        "asyncio",
        "-o",
        "asyncio_mode=auto",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    result.assert_outcomes(passed=1)


def test_tests_marked_for_another_framework_are_left_to_it(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import pytest

        @pytest.mark.trio
        async def test_for_trio():
            raise AssertionError("must not run on asyncio")
        """,
        "-p",
        "no:asyncio",
        "-o",
        "markers=trio",
    )
    result.stdout.no_fnmatch_line("*must not run on asyncio*")
    result.stdout.fnmatch_lines(["*async def functions are not natively supported*"])
