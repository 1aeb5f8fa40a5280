"""The policy file as the pure scheduler's rules."""
from __future__ import annotations

import policies
from federation.spec import PolicyConfig


def rules_from_policy(policy: PolicyConfig) -> policies.Rules:
    groups = policy.spec.jurisdiction_groups
    return policies.Rules(
        classifications={
            name: policies.ClassificationRule(
                allowed_jurisdictions=policies.expand_jurisdictions(rule.allowed_jurisdictions, groups),
                required_labels=dict(rule.required_labels),
                allow_staging=rule.allow_staging, may_cross_border=frozenset(rule.may_cross_border))
            for name, rule in policy.spec.classifications.items()},
        version=policy.metadata.version)
