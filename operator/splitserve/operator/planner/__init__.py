"""Pure planning: `SplitService`/`SplitPool` objects (plain dicts) → desired child objects and
status. Nothing here performs I/O or imports a Kubernetes client.

Module map:
- `naming`: child names, labels, selectors, owner references.
- `config`: the engine ConfigMap and its hash.
- `merge`: merging the pod template override; the desired-vs-observed comparison.
- `pods`: worker and router pod templates.
- `service_plan`: a SplitService → SplitPools, router, Services, ConfigMap, PDBs, RBAC.
- `pool_plan`: a SplitPool → its Deployment and the SplitPool status.
- `status`: the SplitService status from observed objects.
"""

from splitserve.operator.planner.pool_plan import plan_pool, pool_status
from splitserve.operator.planner.service_plan import plan_service
from splitserve.operator.planner.status import Observed, service_status

__all__ = ["Observed", "plan_pool", "plan_service", "pool_status", "service_status"]
