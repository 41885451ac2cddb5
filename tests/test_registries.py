"""One registry behaviour: every named concept (data sets, models, attribution methods,
studies, metrics) refuses a taken name, answers an unknown one with ``Did you mean …?`` and
the valid names, and lists its entries for ``--help``."""

from __future__ import annotations

import pytest

from gradaudit import attribution, data, evaluation, experiments, models
from gradaudit._registry import Registry
from gradaudit._validation import ParameterError
from gradaudit.attribution import registry as attribution_registry

REGISTRIES = {
    "dataset": (data.DATASETS, "mnist", "mnistt"),
    "model": (models.MODELS, "resnet18", "resnet-18"),
    "attribution method": (attribution_registry._REGISTRY, "smoothgrad", "smoothgrd"),
    "study": (experiments.STUDIES, "blockmnist", "blockmnsit"),
    "metric": (evaluation.METRICS, "diffroar", "difroar"),
}


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_registry_contract(kind: str) -> None:
    reg, known, typo = REGISTRIES[kind]
    assert isinstance(reg, Registry) and reg.kind == kind
    entry = reg[known]
    # a taken name is refused, and the entry is left as it was
    with pytest.raises(ParameterError, match=rf"{kind} named '{known}' is already registered"):
        reg.add(known, entry)
    with pytest.raises(ParameterError, match="already registered"):
        reg[known] = entry
    assert reg[known] is entry
    # an unknown name: one error, the closest match and every valid name
    with pytest.raises(ParameterError) as err:
        reg.lookup(typo)
    msg = str(err.value)
    assert msg.startswith(f"Unknown {kind}: '{typo}'. Did you mean '{known}'? Valid: ")
    assert all(name in msg for name in reg)
    assert reg.lookup(known) is entry
    # the listing has one line per entry, in registration order, with a summary
    lines = reg.listing().splitlines()
    assert [line.split(":")[0] for line in lines] == list(reg) and len(lines) == len(reg) >= 2
    assert all(len(line) > len(line.split(":")[0]) + 2 for line in lines), reg.listing()


def test_public_lookups_share_the_behaviour() -> None:
    """The library's own entry points raise the registry's message."""
    cases = [
        (lambda: data.load("mnistt"), "Unknown dataset: 'mnistt'. Did you mean 'mnist'?"),
        (lambda: models.build("mpl", (1, 28, 28), 10), "Unknown model: 'mpl'. Did you mean 'mlp'?"),
        (lambda: attribution.get_method("igg"), "Unknown attribution method: 'igg'. Did you mean 'ig'?"),
        (lambda: experiments.study_config("zo"), "Unknown study: 'zo'. Did you mean 'zoo'?"),
    ]
    for call, start in cases:
        with pytest.raises(ParameterError) as err:
            call()
        assert str(err.value).startswith(start)


def test_registry_add_register_and_remove() -> None:
    reg: Registry[int] = Registry("widget", summary=lambda n: f"number {n}")
    reg.add("one", 1)
    assert reg.register("two")(2) == 2
    with pytest.raises(ParameterError, match=r"^A widget named 'one' is already registered"):
        reg.add("one", 3)
    assert reg.add("one", 3, replace=True) == 3 and reg["one"] == 3
    with pytest.raises(ParameterError, match="name must be a non-empty string"):
        reg.add("", 4)
    assert reg.listing() == "one: number 3\ntwo: number 2"
    del reg["two"]
    assert list(reg) == ["one"] and "two" not in reg
    with pytest.raises(ParameterError, match=r"Unknown widget: 'two'\. Valid: one\.$"):
        reg.lookup("two")
    with pytest.raises(KeyError):
        reg["two"]


def test_the_cli_commands_are_the_metric_registry() -> None:
    """Every metric the command line can feed (a model, maps, block masks) has a command, and
    every option of its spec is a flag of that command (defaults shown as the registry's);
    diffroar's protocol options are its spec's; metrics needing retraining or a proxy have
    no command of their own."""
    import typer

    from gradaudit import cli
    from gradaudit.evaluation.registry import MAP_NEEDS

    commands = typer.main.get_command(cli.app).commands
    where = {m: c.name for c in cli.DECLARED_COMMANDS for m in c.metrics.values()}
    fed = [name for name, spec in evaluation.METRICS.items() if spec.needs <= MAP_NEEDS]
    assert fed == ["road", "pixel-perturbation", "degradation", "leakage"]
    for name in [*fed, "diffroar"]:
        spec = evaluation.METRICS[name]
        command = commands[where.get(name, name)]
        flags = {o for p in command.params for o in p.opts}
        assert {"--" + key.replace("_", "-") for key in spec.options} <= flags, name
        if command.name in ("road", "diffroar"):  # one metric: the option's default is the registry's
            for p in command.params:
                key = p.name.removeprefix("opt_")
                if p.name.startswith("opt_") and not isinstance(spec.options[key].default, bool):
                    default = spec.options[key].default
                    shown = ",".join(f"{v:g}" for v in default) if isinstance(default, tuple | list) else str(default)
                    assert p.default == shown, (name, key)
    assert not {"roar", "kar", "gan-test"} & set(commands)


def test_every_register_function_refuses_a_taken_name_unless_replace() -> None:
    """data.registry.register, attribution.register, evaluation's register and the studies' register
    share the registry's refusal and its ``replace=True``."""
    from gradaudit.data import registry as data_registry
    from gradaudit.evaluation import registry as metric_registry
    from gradaudit.experiments import base

    loader = data.DATASETS["mnist"]
    method = attribution.get_method("grad")
    metric = evaluation.get_metric("leakage")
    study = experiments.STUDIES["zoo"]
    cases = [
        (lambda replace: data_registry.register("mnist", replace=replace)(loader), data.DATASETS, "mnist", loader),
        (lambda replace: attribution.register(method, replace=replace), attribution.METHODS, "grad", method),
        (lambda replace: metric_registry.register(metric, replace=replace), evaluation.METRICS, "leakage", metric),
        (lambda replace: base.register(study, replace=replace), experiments.STUDIES, "zoo", study),
    ]
    for add, reg, name, entry in cases:
        with pytest.raises(ParameterError, match=rf"named '{name}' is already registered"):
            add(False)
        assert add(True) is entry and reg[name] is entry
