"""Choosing the next config to try: the seed's manual workflow, one trial at a time.

Layers are left in float one at a time in order of sensitivity, the input and output
layers first when they are among the culprits; the clips of the sensitive layers that
stay quantized are re-tuned within 0.3..1.7 x their observed range; with a weight-bits
budget the least sensitive layers get INT4 weights until the config fits. Each choice
is checked on the trained model of the last trial (:mod:`quantlib.tune.variants`)
before a trial is spent on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quantlib.config import QuantConfig
from quantlib.spec import AccuracyTarget
from quantlib.tune.edits import avg_weight_bits, with_changes
from quantlib.tune.objective import Objective
from quantlib.tune.sensitivity import Sensitivity
from quantlib.tune.variants import Probe, Variant

CLIP_RATIOS: tuple[float, ...] = tuple(round(0.3 + 0.1 * i, 1) for i in range(15))  # the seed's 0.3..1.7
EDGE_SHARE = 0.5  # an input/output layer goes first when it accounts for at least half of the worst layer's drop
EPS = 1e-12
MIN_GAIN = 0.05  # fixed clips stop being learned: only worth it for a 5% smaller drop
MAX_RETUNED = 8  # clip search costs 15 passes per layer: the most sensitive layers only

ClipChoice = tuple[float, float | None]


@dataclass(frozen=True)
class Proposal:
    """The next trial's config and the sentences that say what changed and why."""

    config: QuantConfig
    floats: frozenset[str]
    clips: dict[str, ClipChoice]
    int4: frozenset[str]
    changes: list[str]
    predicted_drop: float


@dataclass
class Planner:
    """Holds what the tuner has changed so far; :meth:`next` proposes one more step."""

    base: QuantConfig
    target: AccuracyTarget
    objective: Objective
    sensitivity: list[Sensitivity]
    base_drop: float
    edges: dict[str, str]
    params: dict[str, int]
    floats: frozenset[str] = frozenset()
    clips: dict[str, ClipChoice] = field(default_factory=dict)
    int4: frozenset[str] = frozenset()
    order: list[tuple[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        self.order = self._float_order()

    @property
    def sensitive(self) -> list[str]:
        return [name for name, _ in self._scored()]

    def _scored(self) -> list[tuple[str, float]]:
        scores = [(s.layer, s.score(self.base_drop)) for s in self.sensitivity]
        return sorted((item for item in scores if item[1] > EPS), key=lambda item: -item[1])

    def _float_order(self) -> list[tuple[str, str]]:
        by_name = {s.layer: s for s in self.sensitivity}
        scored = self._scored()
        order: list[tuple[str, str]] = []
        while scored:
            top = scored[0][1]
            pick = next(((n, v) for n, v in scored if n in self.edges and v >= EDGE_SHARE * top), scored[0])
            scored.remove(pick)
            entry = by_name[pick[0]]
            why = f"{self.edges[pick[0]]}, the seed's first suspect" if pick[0] in self.edges else "most sensitive left"
            costs = (
                f"quantized alone it costs {self.objective.describe(entry.quantized_only_drop)}; with only it in "
                f"float the drop is {self.objective.describe(entry.float_only_drop)}"
            )
            order.append((pick[0], f"{why}: {costs}"))
        return order

    def next(self, probe: Probe) -> Proposal | None:
        """The next config to train, or None when nothing is left to try."""
        notes: list[str] = []
        stay = self._propose(probe, self.floats, [])
        if stay is not None and stay.changes and stay.predicted_drop <= self.target.max_drop:
            return self._take(stay)
        enabled = set(self.base.enabled_layers())
        while self.order:
            layer, reason = self.order.pop(0)
            if enabled <= self.floats | {layer}:
                notes.append(f"kept {layer} quantized: it is the last quantized layer")
                continue
            go = self._propose(probe, self.floats | {layer}, [*notes, f"left {layer} in float ({reason})"])
            if go is not None:
                return self._take(go)
            notes.append(f"kept {layer} quantized: in float it would not fit the weight-bits budget")
        return self._take(stay) if stay is not None and stay.changes else None

    def _take(self, proposal: Proposal) -> Proposal:
        self.floats, self.clips, self.int4 = proposal.floats, proposal.clips, proposal.int4
        return proposal

    def _propose(self, probe: Probe, floats: frozenset[str], changes: list[str]) -> Proposal | None:
        int4 = self._int4_for(floats)
        if int4 is None:
            return None
        clips = {name: clip for name, clip in self.clips.items() if name not in floats}
        changes = [*changes, *self._retune(probe, floats, clips, int4)]
        changes += self._int4_changes(floats, int4)
        config = with_changes(self.base, floats, clips, int4)
        predicted = probe.drop(Variant(floats, clips, int4))
        return Proposal(config, floats, clips, int4, changes, predicted)

    def _retune(
        self, probe: Probe, floats: frozenset[str], clips: dict[str, ClipChoice], int4: frozenset[str]
    ) -> list[str]:
        """Greedy, layer by layer in order of sensitivity: the ratio of the observed range
        whose fixed clips give the least drop in simulation; ``clips`` is updated."""
        layers = probe.layers()
        changes = []
        for name in [n for n in self.sensitive if n not in floats and n in layers][:MAX_RETUNED]:
            act = layers[name].act_quant
            high, low = float(act.observed_max), float(act.observed_min)
            if high <= 0:
                continue
            signed = not act.fixed_min and low < 0
            before = probe.drop(Variant(floats, clips, int4))
            best: tuple[float, float, ClipChoice] | None = None
            for ratio in CLIP_RATIOS:
                choice = (ratio * high, ratio * low if signed else None)
                drop = probe.drop(Variant(floats, {**clips, name: choice}, int4))
                if drop < (best[0] if best else before) - EPS:
                    best = (drop, ratio, choice)
            if best is None or best[0] > before - MIN_GAIN * abs(before):
                continue
            drop, ratio, choice = best
            clips[name] = choice
            lower = f", clip_min to {ratio:.1f}x observed min ({choice[1]:.4g})" if choice[1] is not None else ""
            changes.append(
                f"clip_max of {name} set to {ratio:.1f}x observed max ({choice[0]:.4g}){lower}: simulated drop "
                f"{self.objective.describe(before)} -> {self.objective.describe(drop)}"
            )
        return changes

    def _int4_for(self, floats: frozenset[str]) -> frozenset[str] | None:
        """INT4 weights for the least sensitive layers until the budget fits, then back to
        INT8 for any the budget no longer needs; None if even all-INT4 does not fit."""
        budget = self.target.weight_bits_budget
        if budget is None:
            return frozenset()
        ranked = [s.layer for s in sorted(self.sensitivity, key=lambda s: (s.int4_only_drop, -self.params[s.layer]))]
        ranked = [name for name in ranked if name not in floats]
        chosen: list[str] = []
        for name in [None, *ranked]:
            if name is not None:
                chosen.append(name)
            if self._bits(floats, chosen) <= budget + EPS:
                break
        else:
            return None
        for name in reversed(list(chosen)):
            rest = [n for n in chosen if n != name]
            if self._bits(floats, rest) <= budget + EPS:
                chosen = rest
        return frozenset(chosen)

    def _bits(self, floats: frozenset[str], int4: list[str] | frozenset[str]) -> float:
        return avg_weight_bits(with_changes(self.base, floats, {}, int4), self.params)

    def _int4_changes(self, floats: frozenset[str], int4: frozenset[str]) -> list[str]:
        changes = []
        added = sorted(int4 - self.int4)
        if added:
            by_name = {s.layer: s for s in self.sensitivity}
            costs = ", ".join(self.objective.describe(by_name[name].int4_only_drop) for name in added)
            changes.append(
                f"weights of {', '.join(added)} set to INT4 (least sensitive to INT4; alone: {costs}): average "
                f"weight bits {self._bits(floats, int4):.2f} within the budget of {self.target.weight_bits_budget}"
            )
        back = sorted(self.int4 - int4 - floats)
        if back:
            changes.append(f"weights of {', '.join(back)} back to INT8")
        return changes
