"""The guardrails policy pack: `pulumi preview --policy-pack policy/` fails on any violation."""

from pulumi_policy import EnforcementLevel, PolicyPack, StackValidationPolicy

from rules import RULES, Resource


def _resources(args) -> list[Resource]:
    # URNs identify resources (logical names may repeat across types); dependencies say which
    # resource a property points at while its value is still unknown in a preview.
    return [Resource(r.resource_type, r.urn, dict(r.props),
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
