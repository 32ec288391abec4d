"""A sandbox: a scratch cgroup, private network namespaces, a private accel
instance (pins and state of its own), always removed, also on failure.
`accel doctor --live`, the tests, the torture suite and the benchmarks all
run in one, so that nothing they do reaches the node's own connections.

Every name a sandbox makes embeds the pid of its maker (``names.scratch``),
so that ``sweep()`` removes what a crashed run left without touching what
a live one still uses.
"""

from .cgroup import inside, own_cgroup, private_cgroup
from .controller import ACCEL, Controller
from .names import scratch
from .signals import exit_on_terminate
from .sweep import sweep
from .topology import Pod, Topology, build_pods, create_netns, hidden_netns, plug_hidden, pods, remove_netns

__all__ = [
    "ACCEL",
    "Controller",
    "Pod",
    "Topology",
    "build_pods",
    "create_netns",
    "exit_on_terminate",
    "hidden_netns",
    "inside",
    "own_cgroup",
    "plug_hidden",
    "pods",
    "private_cgroup",
    "remove_netns",
    "scratch",
    "sweep",
]
