"""Governance: who is acting, what the policy allows them, what they may reach, and the record.

``identity`` (the principal, from trusted configuration), ``policy`` (rules, risks, approvers;
``seedpolicy`` and ``agentpolicy`` for the seed runtime's files), ``verdict`` (the policy's
answer for one step), ``workspace`` and ``confine`` (what paths and SQL may reach),
``secrets`` and ``audit`` (the redacted, append-only trail).
"""
