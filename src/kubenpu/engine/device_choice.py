"""Which whole devices of a node a request gets: one rule for the engine and the device plugin.

Pure Python over plain sequences, without numpy, so that the device plugin (which loads no
numpy) can use it too: the engine calls it with a node's free device slots
(``framework.select_whole_topology``), the device plugin with the devices the kubelet
offers (``deviceplugin.manager.ResourceManager.preferred``). A plugin's own choice is then
the one the scheduler would have made.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence


def choose_whole(groups: Sequence[int], k: int, *, spanned: Collection[int] = ()) -> list[int]:
    """Positions of ``k`` free devices, given each free device's interconnect group.

    ``groups[i]`` is the group of the i-th free device; within a group the devices are
    taken in that order (lowest index first, when the caller sorts them so). The rule:

    - first the devices of the groups in ``spanned`` (those the request already uses, e.g.
      the kubelet's must-include devices), by group number: they cost no extra group;
    - then, if one group holds the rest, the tightest such group (fewest free devices,
      then the lowest group number): bigger free groups stay whole for bigger requests;
    - else the largest groups first (ties: the lowest group number), spanning as few
      groups as possible.

    Fewer than ``k`` positions when there are fewer than ``k`` free devices.
    """
    members: dict[int, list[int]] = {}
    for position, group in enumerate(groups):
        members.setdefault(group, []).append(position)
    picked: list[int] = []
    for group in sorted(set(spanned)):
        picked.extend(members.pop(group, [])[: k - len(picked)])
    rest = k - len(picked)
    if rest <= 0:
        return picked
    fitting = [g for g, m in members.items() if len(m) >= rest]
    if fitting:
        best = min(fitting, key=lambda g: (len(members[g]), g))
        return picked + members[best][:rest]
    for group in sorted(members, key=lambda g: (-len(members[g]), g)):
        picked.extend(members[group][: k - len(picked)])
        if len(picked) >= k:
            break
    return picked
