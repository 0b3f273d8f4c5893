"""The one source of truth for resource names, labels and annotation keys.

Every component (device plugin, extender, webhook, kubectl plugin, adapters) imports these
constants; no other module spells them out.
"""

from typing import Final

#: Whole NPUs, exclusive (integer extended resource).
RESOURCE_NPU: Final = "aliyun.com/npu"
#: Percent of one NPU's compute, for a shared NPU (integer 1..100).
RESOURCE_NPU_CORE: Final = "aliyun.com/npu-core"
#: NPU memory in GiB on a shared NPU (optional dimension).
RESOURCE_NPU_MEM: Final = "aliyun.com/npu-mem"

#: Node label carrying the device model, e.g. ``hanguang-800``.
LABEL_NPU_MODEL: Final = "aliyun.com/npu-model"
#: Well-known node label of the cloud instance type.
LABEL_INSTANCE_TYPE: Final = "node.kubernetes.io/instance-type"
#: Instance type of the reference NPU worker (Alibaba Cloud ACK).
REFERENCE_INSTANCE_TYPE: Final = "ecs.ebman1.26xlarge"
#: Device model advertised by the reference instance type.
REFERENCE_NPU_MODEL: Final = "hanguang-800"

#: Most NPUs one node may carry; a larger count in input is a typo, not hardware.
MAX_DEVICES_PER_NODE: Final = 64
#: Units of ``aliyun.com/npu-core`` per device (percent).
CORE_UNITS_PER_DEVICE: Final = 100
#: Internal compute unit: one device holds 1000 milli (the openb trace's unit).
MILLI_PER_DEVICE: Final = 1000
#: Milli-devices per unit of aliyun.com/npu-core (one percent of one NPU).
MILLI_PER_CORE_UNIT: Final = MILLI_PER_DEVICE // CORE_UNITS_PER_DEVICE

_ANNOTATION_PREFIX: Final = "kubenpu.io/"
#: Pod annotation: the node the placement was made for.
ANNOTATION_NODE: Final = _ANNOTATION_PREFIX + "node"
#: Pod annotation: comma-separated device ids given to the pod.
ANNOTATION_DEVICES: Final = _ANNOTATION_PREFIX + "devices"
#: Pod annotation: comma-separated shares (milli of one device) aligned with the device ids.
ANNOTATION_SHARES: Final = _ANNOTATION_PREFIX + "shares"
#: Pod annotation: RFC 3339 time the placement was recorded.
ANNOTATION_ASSUMED_AT: Final = _ANNOTATION_PREFIX + "assumed-at"
#: Pod annotation: name of the policy that made the placement.
ANNOTATION_POLICY: Final = _ANNOTATION_PREFIX + "policy"
#: Pod label: the node a placement was made for (the annotation, selectable, so a binder
#: can list every placement on one node with a label selector).
LABEL_PLACED_NODE: Final = _ANNOTATION_PREFIX + "node"
#: Node annotation written by the device plugin: JSON list of the node's devices
#: (id, index, model, memory_mib, group, healthy), updated on every health change.
ANNOTATION_DEVICE_INVENTORY: Final = _ANNOTATION_PREFIX + "device-inventory"
#: Node label saying what serves the node's NPUs; :data:`NPU_DRIVER_DRA` on nodes whose
#: NPUs the DRA driver publishes as ResourceSlices (no ``aliyun.com/npu`` allocatable):
#: the extender passes such nodes to kube-scheduler's own DRA plugin (docs/dra.md).
LABEL_NPU_DRIVER: Final = _ANNOTATION_PREFIX + "npu-driver"
#: Value of :data:`LABEL_NPU_DRIVER` on DRA-served nodes.
NPU_DRIVER_DRA: Final = "dra"

#: Environment variable listing the device indices visible to a container.
ENV_VISIBLE_DEVICES: Final = "NPU_VISIBLE_DEVICES"

#: Environment variable: percent of one NPU's compute granted to a shared container.
ENV_CORE_LIMIT: Final = "NPU_CORE_LIMIT"
#: Environment variable: NPU memory in GiB granted to a shared container.
ENV_MEM_LIMIT_GIB: Final = "NPU_MEM_LIMIT_GIB"
#: Environment variable of the node's name (set from the downward API in the DaemonSet).
ENV_NODE_NAME: Final = "NODE_NAME"
#: Prefix of the device plugin's settings in the environment, e.g. KUBENPU_DP_BACKEND.
ENV_DEVICE_PLUGIN_PREFIX: Final = "KUBENPU_DP_"

#: Node taint key an operator may put on NPU nodes (effect ``NoSchedule``) to keep pods that
#: ask for no NPU off them; the admission webhook adds the matching toleration to NPU pods.
TAINT_NPU: Final = "aliyun.com/npu"
#: Effect of :data:`TAINT_NPU` that the webhook's toleration matches.
TAINT_NPU_EFFECT: Final = "NoSchedule"

#: Namespace annotation: the registry server (``host[:port]``) of the namespace's NPU images.
ANNOTATION_NPU_REGISTRY: Final = _ANNOTATION_PREFIX + "npu-registry"
#: Namespace annotation: the docker-registry Secret the webhook adds to NPU pods pulling from
#: :data:`ANNOTATION_NPU_REGISTRY` that name no ``imagePullSecrets`` themselves.
ANNOTATION_NPU_REGISTRY_SECRET: Final = _ANNOTATION_PREFIX + "npu-registry-secret"
#: Namespace or pod label; the value ``disabled`` keeps the admission webhook away (its
#: webhook configurations select on it).
LABEL_ADMISSION: Final = _ANNOTATION_PREFIX + "admission"

#: Labels and annotation of ``kubectl npu validate``'s Jobs and pods: the run (its
#: clean-up selects on it) and the node each validates.
LABEL_VALIDATE_RUN: Final = _ANNOTATION_PREFIX + "validate-run"
ANNOTATION_VALIDATE_NODE: Final = _ANNOTATION_PREFIX + "validate-node"
#: On a PodGroup: ``none`` (default), ``prefer`` or ``require`` one topology domain for
#: its gang (one node, then one node group), when the group sets no topology constraint.
ANNOTATION_GANG_TOPOLOGY: Final = _ANNOTATION_PREFIX + "gang-topology"
#: On a PodGroup: the node label whose value names a node group (gang topology).
ANNOTATION_GANG_GROUP_LABEL: Final = _ANNOTATION_PREFIX + "gang-group-label"
#: The DRA driver's name: ResourceSlices, the DeviceClass and attribute domains carry it.
DRA_DRIVER: Final = "npu.aliyun.com"
