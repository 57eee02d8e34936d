"""What ``ship`` returns: every candidate measured here and planned for the target, and the pick."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

SCHEMA = "edgeq-ship/1"


@dataclass
class Option:
    """One candidate file, measured here and planned for the target."""

    label: str  # the manifest's type: Q4_K_M-imat, tuned-5.92bpw, …
    file: str
    size_bytes: int
    bits_per_weight: float
    kld_mean: float | None  # measured here, against the F16 file
    delta_ppl_pct: float | None
    top1_pct: float | None
    tg_tps_here: float | None  # measured here (bench, batch 1)
    pp_tps_here: float | None
    peak_rss_here_bytes: int | None  # measured here, at bench's small context
    ram_target_bytes: int  # predicted on the target at ctx (the plan's memory model)
    tg_tps_target: float  # measured here when the target is here, else predicted
    tg_measured: bool
    fits: bool
    # The range the pick compares within (measured: the repetitions' min–max; None: a prediction) and pp.
    tg_low_target: float | None = None
    tg_high_target: float | None = None
    pp_tps_target: float | None = None
    pp_low_target: float | None = None
    pp_high_target: float | None = None
    dominated_by: str | None = None  # a candidate with no more KLD, faster beyond noise: off the Pareto front


@dataclass
class ShipResult:
    schema: str
    source: dict[str, object]
    target: dict[str, object]  # name, description, ram_bytes, here (is it this machine)
    ctx: int
    folder: str
    chosen: str | None
    runner_up: str | None
    sentence: str
    options: list[Option] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    pushed: str | None = None  # the commit or pull request of --push
    prefer: str = "speed"  # the objective the pick was made by (plan.objective)
    kld_bound: float | None = None  # the quality bound it kept to (None: the quality objective)
    busy: str | None = None  # why the speed stage's machine looked busy (bench.noise), or None
    device: str = "cpu"  # where this machine scored and timed the candidates (--device, resolved): cpu | metal

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
