"""Dev mode's backends: a simulated tofu-controller cluster and a simulated Ansible Semaphore.

They satisfy the same ports as the real adapters (`services.instances.ports.Cluster` and `TaskRunner`)
and move instances through the real condition reasons and task statuses with short delays, so
`opencsp-gateway dev` runs the whole lifecycle on one machine. Failures are opt-in by name prefix and,
by default, hit the first attempt only, so a retry in dev shows the FAILED → retry path succeed.
"""

from services.simulated.cluster import SimulatedCluster
from services.simulated.semaphore import SimulatedSemaphore

__all__ = ["SimulatedCluster", "SimulatedSemaphore"]
