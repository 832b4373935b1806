"""The guardrails policy pack: `pulumi preview --policy-pack policy/` fails on any violation."""

from collections.abc import Mapping, Sequence

from pulumi_policy import EnforcementLevel, PolicyPack, StackValidationPolicy
from pulumi_policy.proxy import UnknownValueError

from rules import RULES, Resource


def _plain(value):
    """The SDK's property proxies as plain dicts and lists, with None for what a preview does not
    know yet: the proxies raise on an unknown value (which would skip the whole rule in a preview)
    and are no dict or list (which the rules would not look into)."""
    if isinstance(value, Mapping):
        return {key: _plain(_known(value, key)) for key in value}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(_known(value, i)) for i in range(len(value))]
    return value


def _known(container, key):
    try:
        return container[key]
    except UnknownValueError:
        return None


def _resources(args) -> list[Resource]:
    # URNs identify resources (logical names may repeat across types); dependencies say which
    # resource a property points at while its value is still unknown in a preview.
    return [Resource(r.resource_type, r.urn, _plain(r.props),
                     {prop: [d.urn for d in deps] for prop, deps in r.property_dependencies.items()})
            for r in args.resources]


def _policy(rule) -> StackValidationPolicy:
    def validate(args, report_violation):
        for message in rule.check(_resources(args)):
            report_violation(message)

    return StackValidationPolicy(name=rule.name, description=rule.description, validate=validate,
                                 enforcement_level=EnforcementLevel.MANDATORY)


PolicyPack(name="image-pipeline-guardrails", enforcement_level=EnforcementLevel.MANDATORY,
           policies=[_policy(rule) for rule in RULES])
