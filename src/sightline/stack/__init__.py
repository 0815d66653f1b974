"""The whole Sightline stack on one machine, on loopback, under one data directory.

``settings`` (what the user sets) -> ``plan`` (each component's command and its service's own
Settings as env vars) -> ``supervisor`` (start, stop) -> ``watch`` (restart what exits, with
``backoff``). Starts the real ``tritonserver`` (CPU, python backend), preprocess (KServe
ModelServer), deid, explain (Ray Serve) and the gateway as child processes; ``prometheus``
optionally scrapes them.
"""

from sightline.stack.backoff import Backoff, RestartPolicy
from sightline.stack.plan import plan
from sightline.stack.processes import STACK_ENV, http_ok, shm_files, tagged_processes
from sightline.stack.settings import StackSettings, free_loopback_ports, settings_on_free_ports
from sightline.stack.state import Component, ExitRecord, StackState
from sightline.stack.supervisor import Stack, kill_component, restart_component
from sightline.stack.watch import Supervisor, restart

__all__ = [
    "STACK_ENV",
    "Backoff",
    "Component",
    "ExitRecord",
    "RestartPolicy",
    "Stack",
    "StackSettings",
    "StackState",
    "Supervisor",
    "free_loopback_ports",
    "http_ok",
    "kill_component",
    "plan",
    "restart",
    "restart_component",
    "settings_on_free_ports",
    "shm_files",
    "tagged_processes",
]
