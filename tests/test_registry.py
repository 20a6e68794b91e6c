from __future__ import annotations

import pytest

from zoo.errors import ConfigError, UnknownNameError
from zoo.registry import Registry, close_names


def make() -> Registry[int]:
    reg: Registry[int] = Registry("widget")

    @reg.register("resnet18", depth=18)
    def r18(scale: int = 1) -> int:
        return 18 * scale

    @reg.register("resnet50")
    def r50() -> int:
        return 50

    @reg.register()
    def vgg16() -> int:
        return 16

    return reg


def test_build_and_metadata() -> None:
    reg = make()
    assert reg.build("resnet18", scale=2) == 36
    assert reg.build("vgg16") == 16  # registered under the function's name
    assert reg.metadata("resnet18") == {"depth": 18}
    assert "resnet50" in reg and "resnet34" not in reg
    assert len(reg) == 3


def test_list_with_wildcards() -> None:
    reg = make()
    assert reg.list() == ["resnet18", "resnet50", "vgg16"]
    assert reg.list("resnet*") == ["resnet18", "resnet50"]
    assert reg.list("*5*") == ["resnet50"]
    assert reg.list("RESNET?8") == ["resnet18"]
    assert reg.list("nothing*") == []


def test_unknown_name_lists_close_names() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown widget 'resnet19'; did you mean: resnet18"):
        make().build("resnet19")


def test_unknown_name_without_close_match_lists_all() -> None:
    with pytest.raises(UnknownNameError, match="available: resnet18, resnet50, vgg16"):
        make().get("xyz")


def test_build_from_a_config_checks_options_before_the_call() -> None:
    reg = make()
    assert reg.build_from({"name": "resnet18", "scale": 3}) == 54
    with pytest.raises(UnknownNameError, match="did you mean: resnet18"):
        reg.build_from({"name": "resnet19"})
    with pytest.raises(ConfigError, match=r"^unknown option part.scal; known: scale$"):
        reg.build_from({"name": "resnet18", "scal": 3}, key="part")
    with pytest.raises(ConfigError, match=r"^widget.scale must be an integer, got 'big'$"):
        reg.build_from({"name": "resnet18", "scale": "big"})
    with pytest.raises(ConfigError, match=r"^widget.scale is set by zoo; remove it$"):
        reg.build_from({"name": "resnet18", "scale": 2}, scale=1)


def test_build_from_turns_a_type_error_into_a_config_error() -> None:
    reg: Registry[int] = Registry("widget")

    @reg.register("picky")
    def picky(**kw: int) -> int:  # takes anything, then refuses it (as torch.optim does)
        raise TypeError(f"unexpected {sorted(kw)}")

    with pytest.raises(ConfigError, match=r"^part 'picky': unexpected \['x'\]$"):
        reg.build_from({"name": "picky", "x": 1}, group="part")


def test_build_from_through_a_wrapper_checks_only_types() -> None:
    reg = make()

    def wrapper(name: str, boost: int = 0, **kw: int) -> int:  # adds an option of its own, as create_model does
        return reg.build(name, **kw) + boost

    assert reg.build_from({"name": "resnet18", "scale": 2, "boost": 1}, call=wrapper) == 37
    with pytest.raises(ConfigError, match=r"^widget.scale must be an integer, got 'big'$"):
        reg.build_from({"name": "resnet18", "scale": "big"}, call=wrapper)
    with pytest.raises(ConfigError, match=r"^widget 'resnet18': .*unexpected keyword argument 'scal'"):
        reg.build_from({"name": "resnet18", "scal": 2}, call=wrapper)


def test_duplicate_registration_is_refused() -> None:
    reg = make()
    with pytest.raises(ValueError, match="already registered"):
        reg.register("vgg16")(lambda: 0)


def test_close_names_prefix() -> None:
    assert sorted(close_names("resnet", ["resnet18", "resnet50", "vgg16"])) == ["resnet18", "resnet50"]


def test_model_registry_api() -> None:
    import zoo

    assert "lenet5" in zoo.list_models("lenet*")
    assert zoo.list_models(task="no-such-task") == []
    with pytest.raises(UnknownNameError, match="lenet5"):
        zoo.create_model("lenet4")
    assert zoo.model_info("lenet5")["input_size"] == 32
