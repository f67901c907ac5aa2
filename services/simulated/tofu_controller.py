"""The simulated tofu-controller's cluster under the name the composition root imports it by.

`SimulatedCluster` lives in `services.simulated.cluster`; its controller's writes in `tofu_script`.
"""

from services.simulated.cluster import SimulatedCluster

__all__ = ["SimulatedCluster"]
