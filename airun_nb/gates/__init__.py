"""Approval gates: a step that waits for a person's decision, from any channel.

``config`` validates a step's ``approval:`` mapping; ``gate`` opens and decides gates (first
decision wins); ``links`` signs links to a gate's page; ``notify`` tells someone a gate opened.
"""
