"""The recipe race: strategy auto's candidates trained on the user's data, the better ones for longer.

:mod:`vistrain.training.auto` measures the data and the machine and lists the candidates that fit
the budget (``reasoning["entrants"]``: the frozen head, gradual unfreezing, fine-tuning at one or
two input sizes, a network trained from scratch at the images' own size), in the order its rule
expects them to be accurate.  The rule orders; the race decides:

1. **Plan** (:func:`plan_race`): each entrant gets the epochs it would train if it won, scaled so
   that the whole race -- every rung of every entrant, the winner's remaining epochs, the
   learning-rate tests -- fits what is left of the budget in the worst case (the most expensive
   entrants surviving).  While the winner would get less than ``MIN_SCALE`` of the time it would
   have alone, the most expensive end-to-end entrant is dropped (the frozen head, the baseline
   every other entrant must beat, stays).
2. **Learning rate** of each entrant from the LR range test (:mod:`vistrain.training.lrfind`) on
   its own training set-up, ``LR_STEPS`` steps from 1/100 to 100 times the rule's rate, kept within
   ``LR_BOUND`` of the rule's rate (a short test is noisy); a test that would cost more than
   ``LR_SHARE`` of the plan is skipped and the rule's rate used, said so.
3. **Rungs** (successive halving, reduction factor 2): every entrant trains ``RUNG_FRACTIONS[0]``
   of its planned epochs and is scored on the validation split (its best validation accuracy so
   far); the better half (at least one) continues to the next fraction from where it paused
   (:func:`~vistrain.training.strategy.fit` with ``until``, then resumed: nothing is trained
   twice), until one is left.  The frozen head trains its head in full in the first rung (its cost
   is the one forward pass).  At the last cut, when only one of the two best has training left,
   it trains to its end first (what it would do as the winner: the plan counts it) and the two are
   compared finished.  Ties go to the entrant the rule ranked first.  An end-to-end winner must
   lead the frozen head by more than ``LEAD_Z`` standard errors of the difference of the two
   validation accuracies (one-sided 95 %); a lead the split cannot tell from chance keeps the
   frozen head (said in the log, ``run.json`` and the report).
4. The **winner** continues to its planned epochs in the run folder itself, from its last rung's
   checkpoint (:func:`install_checkpoint`), and is evaluated and reported like any run.

Every rung trains under a deadline (its estimate, twice, and never past the budget), so a wrong
estimate cannot eat the budget; when the budget runs out the best entrant so far wins.  Each
entrant trains at its own recipe's precision (:func:`~vistrain.training.prepare.recipe_runtime`:
bf16 for the network from scratch where the CPU has it, float32 otherwise), as it would named.

Why not Optuna's pruners: ``SuccessiveHalvingPruner`` and ``HyperbandPruner`` are asynchronous --
a trial is judged when it reports, against the trials that reported before it -- so with a handful
of recipes trained in turn the first to report is always promoted, and Hyperband's brackets split
four trials so that they never meet.  This race is synchronous (a rung is complete before anyone is
promoted) over at most ``MAX_ENTRANTS`` fixed candidates: a sort.

Example (the plan alone; seconds per epoch and fixed costs of three entrants, 600 s left):
    >>> e = [Entrant("feature-extraction", "feature-extraction", {}, 0.0, 40.0),
    ...      Entrant("finetune@112", "finetune", {}, 30.0, 20.0),
    ...      Entrant("scratch", "scratch", {}, 3.0, 5.0)]
    >>> plan = plan_race(e, 600.0, max_epochs=30)
    >>> [(x.name, x.epochs) for x in plan.entrants], plan.survivors
    ([('feature-extraction', 30), ('finetune@112', 17), ('scratch', 30)], [3, 1])
"""
from __future__ import annotations

import copy
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch.distributed as dist

from vistrain import fsutil
from vistrain.config import TrainConfig
from vistrain.data.scan import ImageIndex
from vistrain.device import Runtime
from vistrain.training import checkpoint as ckpt
from vistrain.training.auto import BUDGET_SHARE, apply_choice
from vistrain.training.context import PreparedData, RunContext
from vistrain.training.lrfind import run_range_test
from vistrain.training.plan import build_plan, configured_lr, run_features
from vistrain.training.prepare import prepare_model, prepare_pixels, recipe_runtime
from vistrain.training.strategy import fit
from vistrain.transforms.preprocess import Preprocess

log = logging.getLogger("vistrain")

RUNG_FRACTIONS = (0.25, 0.5)   # of an entrant's planned epochs, at which the race compares
MAX_ENTRANTS = 5
MIN_SCALE = 0.35     # the winner gets at least this share of the epochs it would train alone
MIN_EPOCHS = 4       # planned epochs below this: the entrant cannot show anything in a rung
LR_STEPS = 60        # steps of an entrant's LR range test
LR_BOUND = 10.0      # the test's rate is kept within this factor of the rule's
LR_SHARE = 0.05      # of the planned seconds, at most, per entrant's LR test
RUNG_SLACK = 2.0     # a rung's deadline: its estimate times this (never past the budget)
# A lead counts when it exceeds this many standard errors of the difference (one-sided 95 %).
# Why not one: each score is the best epoch of a noisy validation curve, which favours the
# entrant with more epochs, and at one standard error (84 % one-sided) a scratch network's lead
# of 13 images in 1,500 over the frozen head won on validation and lost 0.6 points on test.
LEAD_Z = 1.645
FOLDER = "race"      # inside the run folder, while the race runs


@dataclass
class Entrant:
    """One candidate recipe in the race, its plan and what it did."""
    name: str                    # finetune@112, scratch, ...
    recipe: str                  # feature-extraction | gradual | finetune | scratch
    changes: dict                # the settings that make the recipe ({"section.key": value})
    epoch_seconds: float         # estimated seconds per epoch (0: feature extraction's head)
    fixed_seconds: float         # decoding, the test pass, a feature pass
    images_per_second: float = 0.0
    lr_test_seconds: float = 0.0
    epochs: int = 0              # planned: what it trains if it wins
    lr: float | None = None
    lr_source: str = ""
    rule_lr: float | None = None  # the rule's rate (the range test adjusts it)
    trained: int = 0             # epochs trained so far
    seconds: float = 0.0         # wall-clock seconds spent on it so far
    curve: list = field(default_factory=list)   # [[seconds, validation accuracy], ...] per epoch
    score: float | None = None   # best validation accuracy so far
    finished: bool = False       # trained its planned epochs (or stopped early)
    out_at_rung: int | None = None

    @property
    def end_to_end(self) -> bool:
        return self.recipe != "feature-extraction"

    def rung_epochs(self, rung: int, racing: int) -> int:
        """Epochs trained by the end of ``rung`` of ``racing`` compared rungs (``rung == racing``:
        the winner's, all planned epochs)."""
        if not self.end_to_end or rung >= min(racing, len(RUNG_FRACTIONS)):
            return self.epochs
        return min(self.epochs, max(1, math.ceil(self.epochs * RUNG_FRACTIONS[rung])))


@dataclass
class RacePlan:
    entrants: list[Entrant]
    survivors: list[int]         # entrants in each rung: [n, n // 2, ..., 1]
    scale: float                 # of the time each would have alone
    worst_seconds: float         # the plan's worst case
    dropped: list[str]


def survivors(n: int) -> list[int]:
    """Entrants per rung, halving to one: ``survivors(5)`` is ``[5, 2, 1]``."""
    out = [n]
    while out[-1] > 1:
        out.append(max(1, out[-1] // 2))
    return out


def _alone_epochs(e: Entrant, seconds: float, max_epochs: int) -> int:
    if not e.end_to_end:
        return max_epochs if e.fixed_seconds <= seconds else 0
    room = seconds - e.fixed_seconds - e.lr_test_seconds
    return min(max_epochs, int(room // max(e.epoch_seconds, 1e-9))) if room > 0 else 0


def worst_case(entrants: list[Entrant], counts: list[int]) -> float:
    """Seconds of the race and the winner's training if the most expensive entrants survive."""
    racing = len(counts) - 1
    total = sum(e.fixed_seconds + e.lr_test_seconds + e.rung_epochs(0, racing) * e.epoch_seconds
                for e in entrants)
    for rung, n in enumerate(counts[1:], start=1):
        steps = sorted(((e.rung_epochs(rung, racing) - e.rung_epochs(rung - 1, racing)) * e.epoch_seconds
                        for e in entrants), reverse=True)
        total += sum(steps[:n])
    return total


def lead_shown(a: float, b: float, n: int) -> tuple[bool, float]:
    """Whether accuracy ``a`` leads ``b`` (both on the same ``n`` validation images) by more than
    ``LEAD_Z`` standard errors of their difference, and that margin: a lead the split cannot tell
    from chance does not count.

    >>> lead_shown(0.767, 0.667, 30)[0], lead_shown(0.9, 0.6, 30)[0]
    (False, True)
    """
    margin = LEAD_Z * math.sqrt((a * (1 - a) + b * (1 - b)) / max(1, n))
    return a - b > margin, margin


def plan_race(entrants: list[Entrant], seconds: float | None, *, max_epochs: int) -> RacePlan:
    """The entrants that fit ``seconds`` (None: no budget), each with its planned epochs; see the
    module docstring."""
    pool, dropped = [copy.copy(e) for e in entrants[:MAX_ENTRANTS]], [e.name for e in entrants[MAX_ENTRANTS:]]
    while True:
        counts = survivors(len(pool))
        if seconds is None or math.isinf(seconds):
            for e in pool:
                e.epochs = max_epochs
            return RacePlan(pool, counts, 1.0, math.inf, dropped)
        for scale in np.arange(1.0, MIN_SCALE - 1e-9, -0.05):
            for e in pool:
                e.epochs = _alone_epochs(e, scale * seconds, max_epochs)
            fits = all(e.epochs >= min(MIN_EPOCHS, max_epochs) for e in pool if e.end_to_end) and \
                all(e.epochs > 0 for e in pool)
            if fits and (cost := worst_case(pool, counts)) <= seconds:
                return RacePlan(pool, counts, round(float(scale), 2), round(cost, 1), dropped)
        costly = [e for e in pool if e.end_to_end]
        if len(pool) <= 1 or not costly:
            return RacePlan(pool, counts, 0.0, math.inf, dropped)
        # the most expensive end-to-end entrant goes (the frozen head stays: it is the baseline)
        drop = max(reversed(costly), key=lambda e: e.fixed_seconds + MIN_EPOCHS * e.epoch_seconds)
        pool.remove(drop)
        dropped.insert(0, drop.name)


@dataclass
class RaceOutcome:
    """The winner: its config (planned epochs and learning rate set), its prepared data, its
    paused checkpoint (end to end) or features (frozen head), and the race's record."""
    cfg: TrainConfig
    winner: Entrant
    prepared: tuple[Preprocess, PreparedData] | None
    checkpoint: Path | None
    features: np.ndarray | None
    record: dict


class Race:
    """One race over ``entrants`` on ``index`` (split as ``parts`` or the config's), training in
    ``folder``; :meth:`run` returns the :class:`RaceOutcome`."""

    def __init__(self, cfg: TrainConfig, index: ImageIndex, rt: Runtime, parts, folder: Path, *,
                 seconds: float | None, deadline: float | None, progress: bool):
        self.cfg, self.index, self.rt, self.parts = cfg, index, rt, parts
        self.folder, self.seconds, self.deadline, self.progress = Path(folder), seconds, deadline, progress
        self.data: dict[tuple, tuple[Preprocess, PreparedData]] = {}
        self.features: dict[str, np.ndarray] = {}
        self.n_val = 0           # validation images the scores are measured on
        self.fallback: str | None = None

    def run(self, entrants: list[Entrant]) -> RaceOutcome:
        t0 = time.monotonic()
        for e in entrants:
            e.lr_test_seconds = self._lr_test_seconds(e)
        plan = plan_race(entrants, self.seconds, max_epochs=self.cfg.train.epochs)
        field_ = plan.entrants
        log.info("race: %s; %s", ", ".join(f"{e.name} ({e.epochs} epochs if it wins)" for e in field_),
                 f"rungs of {' -> '.join(map(str, plan.survivors))} entrants"
                 + (f", worst case {plan.worst_seconds:.0f} s of {self.seconds:.0f} s left"
                    if self.seconds is not None else ""))
        alive, racing = list(field_), len(plan.survivors) - 1
        for rung, keep in enumerate(plan.survivors[1:]):
            for e in alive:
                if not e.finished and not self._out_of_time():
                    self._train(e, e.rung_epochs(rung, racing))
            ranked = self._ranked(alive)
            if keep == 1 and len(ranked) > 1:
                ranked = self._settle(ranked)
            for e in alive:
                if e not in ranked[:keep]:
                    e.out_at_rung = rung
            alive = ranked[:keep]
            log.info("race: after rung %d: %s", rung + 1, "; ".join(
                f"{e.name} {e.score:.3f}" + ("" if e in alive else " (out)")
                for e in field_ if e.out_at_rung in (None, rung) and e.score is not None))
            if self._out_of_time():
                break
        winner = self._shown_better(alive[0], field_)
        return self._outcome(winner, plan, time.monotonic() - t0)

    def _shown_better(self, winner: Entrant, field_: list[Entrant]) -> Entrant:
        """``winner``, or the frozen head when the winner's lead over it on the validation split
        is within ``LEAD_Z`` standard errors of the difference of two accuracies (a lead the split's
        size cannot tell from chance: the cheaper, steadier baseline is kept, and the record
        says why)."""
        frozen = next((e for e in field_ if not e.end_to_end and e.score is not None), None)
        if frozen is None or winner is frozen or winner.score is None or not self.n_val:
            return winner
        a, b, n = winner.score, frozen.score, self.n_val
        shown, margin = lead_shown(a, b, n)
        if shown:
            return winner
        self.fallback = (f"{winner.name} led the frozen head by {a - b:+.3f} on {n} validation images, "
                         f"within the noise (a lead must exceed {LEAD_Z} standard errors, {margin:.3f}): "
                         "the frozen head is kept")
        log.info("race: %s", self.fallback)
        winner.out_at_rung = len(RUNG_FRACTIONS)
        frozen.out_at_rung = None
        return frozen

    def _ranked(self, entrants: list[Entrant]) -> list[Entrant]:
        """Best validation accuracy first; stable, so ties go to the rule's order."""
        ranked = sorted((e for e in entrants if e.score is not None), key=lambda e: -e.score)
        return self._agree(ranked or list(entrants))

    def _settle(self, ranked: list[Entrant]) -> list[Entrant]:
        """The last cut, between the two best: when only one of them has training left (the
        other is the frozen head, or stopped early), it trains its planned epochs first -- what it
        would do as the winner -- and the two are compared finished."""
        top = ranked[:2]
        unfinished = [e for e in top if not e.finished]
        if len(unfinished) == 1 and not self._out_of_time():
            self._train(unfinished[0], unfinished[0].epochs)
            return self._ranked(top) + ranked[2:]
        return ranked

    # ---- one entrant ------------------------------------------------------------------------
    def _train(self, e: Entrant, until: int) -> None:
        started = time.monotonic()
        ecfg = self._config(e)
        rt = recipe_runtime(ecfg, self.rt, say=False)  # each entrant at its own recipe's precision
        model, pcfg = prepare_model(ecfg, self.index, rt)
        pre, data = self._prepared(ecfg, pcfg)
        allowance = (until - e.trained) * e.epoch_seconds + (e.fixed_seconds if e.trained == 0 else 0)
        deadline = started + RUNG_SLACK * max(allowance, 30.0)
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)
        ctx = RunContext(ecfg, rt.prepare_model(model), pcfg, pre, data, rt,
                         out=self._folder(e), progress=self.progress, deadline=deadline)
        feats = None
        if not e.end_to_end:
            feats = self.features.get(e.name)
            if feats is None:
                feats, _ = run_features(ctx)
                self.features[e.name] = feats
        if e.lr is None:
            e.lr, e.lr_source = self._learning_rate(ctx, e, feats)
            ecfg = self._config(e)
            ctx = replace(ctx, cfg=ecfg)
        if e.end_to_end:
            plan = build_plan(ctx, ecfg.strategy.name, features=feats)
            result = fit(plan, ctx, resume=e.trained > 0, until=until)
        else:
            result = self._frozen_head(e, ctx, feats)
        history = result.history
        new = history[e.trained:]
        spent = time.monotonic() - started
        train_s = sum(r.get("seconds", 0.0) for r in new) or 1.0
        for row in new:  # wall-clock per epoch: this rung's time shared by the epochs' training time
            e.seconds += spent * row.get("seconds", 0.0) / train_s
            e.curve.append([round(e.seconds, 1), round(float(row.get("val_accuracy", 0.0)), 4)])
        if not new:
            e.seconds += spent
        e.trained = len(history)
        scores = [r["val_accuracy"] for r in history if r.get("val_accuracy") is not None]
        e.score = float(max(scores)) if scores else e.score
        stopped = "stopped_by_budget" in result.record
        e.finished = not e.end_to_end or e.trained >= e.epochs or (e.trained < until and not stopped)
        if e.end_to_end and e.trained:
            e.epoch_seconds = round(e.seconds / e.trained, 3)  # measured now, for the winner's plan

    def _frozen_head(self, e: Entrant, ctx: RunContext, feats: np.ndarray):
        """The frozen head, trained at the range test's rate and at the rule's, on the cached
        features (seconds each): the better on validation is kept (ties: the rule's), and its
        checkpoint is the entrant's.  A head's range test over a few hundred features is noisy;
        here it only proposes a rate that the validation split then accepts or not."""
        rates = [e.lr] + ([e.rule_lr] if e.rule_lr not in (None, e.lr) else [])
        tried = []
        for k, lr in enumerate(rates):
            cfg = apply_choice(ctx.cfg, {"optim.lr": lr})
            cfg.train.budget = self.cfg.train.budget
            out = self._folder(e) / f"rate-{k}"
            if self.rt.is_main and not out.is_dir():
                out.mkdir()
                fsutil.write_marker(out, "run", race_entrant=f"{e.name} rate {k}")
            self.rt.barrier()
            # each rate from the same start, as a named run of the recipe makes it: seeded, the
            # model created, the head's plan built (the differences are the rates' alone)
            model, _ = prepare_model(cfg, self.index, self.rt)
            sub = replace(ctx, cfg=cfg, out=out, model=ctx.rt.prepare_model(model))
            result = fit(build_plan(sub, cfg.strategy.name, features=feats), sub)
            scores = [r["val_accuracy"] for r in result.history if r.get("val_accuracy") is not None]
            tried.append((max(scores) if scores else -1.0, -k, lr, out, result))
        score, _, lr, out, result = tried[0]
        if len(rates) > 1:
            found, rule = tried[0], tried[1]
            # the proposed rate must show it helped: a lead within the noise of a small validation
            # split keeps the rule's rate (a high head rate that wins by three images out of 30 had
            # driven held-out probabilities of the true class to 0)
            shown, margin = lead_shown(found[0], rule[0], self.n_val or 1)
            shown = _from_rank0(self.rt, shown)  # one choice for every rank
            score, _, lr, out, result = found if shown else rule
            e.lr_source = (f"head at the range test's {found[2]:.2g} (val {found[0]:.3f}) and the rule's "
                           f"{rule[2]:.2g} (val {rule[0]:.3f}): the {'range test' if shown else 'rule'}'s kept"
                           + ("" if shown else f" (a lead over the rule's must exceed {LEAD_Z} standard errors, {margin:.3f})"))
        e.lr = lr
        folder = self._folder(e)  # a collective: called on every rank, never under is_main
        if self.rt.is_main and (out / "checkpoints" / "last.pt").is_file():
            install_checkpoint(out / "checkpoints" / "last.pt", folder)
        self.rt.barrier()
        return result

    def _config(self, e: Entrant) -> TrainConfig:
        changes = {**e.changes, "train.epochs": max(1, e.epochs)}
        if e.lr is not None:
            changes["optim.lr"] = e.lr
        cfg = apply_choice(self.cfg, changes)
        cfg.train.budget = self.cfg.train.budget
        return cfg

    def _prepared(self, cfg: TrainConfig, pcfg) -> tuple[Preprocess, PreparedData]:
        """The decoded data at ``cfg``'s size and channels: decoded (or read from the pixel cache)
        once per race, shared by the entrants that use it."""
        key = (cfg.preprocess.size, cfg.preprocess.grayscale, cfg.model.name)
        if key not in self.data:
            self.data[key] = prepare_pixels(cfg, pcfg, self.rt, self.index, progress=self.progress,
                                            parts=self.parts)
            self.n_val = len(self.data[key][1].part_ids("val"))
        return self.data[key]

    def _folder(self, e: Entrant) -> Path:
        """The entrant's folder, made by rank 0; a barrier, so every rank must call it."""
        folder = self.folder / e.name.replace("@", "-")
        if self.rt.is_main and not folder.is_dir():
            folder.mkdir(parents=True)
            fsutil.write_marker(folder, "run", race_entrant=e.name)
        self.rt.barrier()
        return folder

    def _lr_test_seconds(self, e: Entrant) -> float:
        """What the entrant's LR range test costs (0 when it is skipped: over ``LR_SHARE``)."""
        if not e.end_to_end:
            return 1.0
        batch = self.cfg.data.batch_size
        cost = LR_STEPS * batch / max(e.images_per_second, 1e-6)
        return cost if self.seconds is None or cost <= LR_SHARE * self.seconds else 0.0

    def _learning_rate(self, ctx: RunContext, e: Entrant, feats) -> tuple[float, str]:
        rule = e.rule_lr = configured_lr(ctx.cfg, ctx.pcfg.pretrained)
        if e.end_to_end and e.lr_test_seconds == 0.0:
            return rule, (f"the rule's {rule:.2g}: a {LR_STEPS}-step range test would take over "
                          f"{LR_SHARE:.0%} of the budget")
        box = [None]
        if self.rt.is_main:
            res = run_range_test(ctx, steps=LR_STEPS if e.end_to_end else 100, start_lr=rule / 100,
                                 end_lr=rule * 100, features=feats, beta=0.9)
            # the minimum's rate / 10 (fastai's rule): on a short, noisy test the steepest point
            # lands in the flat start (a from-scratch network got 1/40 of the rule's rate)
            box[0] = res.get("min_div_10")
        if self.rt.distributed:
            dist.broadcast_object_list(box, src=0)
        found = box[0]
        if found is None or not math.isfinite(found) or found <= 0:
            return rule, f"the rule's {rule:.2g}: the range test gave no rate"
        lr = float(min(max(found, rule / LR_BOUND), rule * LR_BOUND))
        kept = "" if lr == found else f", kept within {LR_BOUND:g}x of the rule's {rule:.2g}"
        return lr, f"LR range test (loss minimum / 10): {found:.2g}{kept}"

    def _agree(self, ranked: list[Entrant]) -> list[Entrant]:
        """Rank 0's order for every process of a distributed run."""
        if not self.rt.distributed:
            return ranked
        box = [[e.name for e in ranked]]
        dist.broadcast_object_list(box, src=0)
        by_name = {e.name: e for e in ranked}
        return [by_name[n] for n in box[0]]

    def _out_of_time(self) -> bool:
        """Whether the budget is spent, by rank 0's clock on every process."""
        return self.deadline is not None and bool(_from_rank0(self.rt, time.monotonic() >= self.deadline))

    def _outcome(self, winner: Entrant, plan: RacePlan, seconds: float) -> RaceOutcome:
        if winner.finished:
            winner.epochs = max(1, winner.trained)  # stopped early: nothing is left to train
        cfg = self._config(winner)
        key = (cfg.preprocess.size, cfg.preprocess.grayscale, cfg.model.name)
        for k in list(self.data):  # the other sizes' pixels are no longer needed
            if k != key:
                del self.data[k]
        prepared = self.data.get(key)
        path = None  # the winner's paused (or finished) training, the frozen head's too
        if winner.trained:
            saved = self._folder(winner) / "checkpoints" / "last.pt"
            path = saved if _from_rank0(self.rt, saved.is_file()) else None  # rank 0 writes them
        record = race_record(plan, winner, seconds, self.seconds)
        if self.fallback:
            record.update(fallback=self.fallback, plain=record["plain"] + f"; {self.fallback}")
        return RaceOutcome(cfg, winner, prepared, path, self.features.get(winner.name), record)


def race_record(plan: RacePlan, winner: Entrant, seconds: float, budget_s: float | None) -> dict:
    """run.json's ``strategy.reasoning.race``: the plan, every entrant and the winner."""
    rows = []
    for e in plan.entrants:
        d = asdict(e)
        d.pop("changes")
        d["result"] = ("winner" if e is winner else "not shown better than the frozen head"
                       if e.out_at_rung == len(RUNG_FRACTIONS) else f"out after rung {e.out_at_rung + 1}"
                       if e.out_at_rung is not None else "not trained (budget spent)"
                       if e.score is None else "kept")
        rows.append(d)
    if len(plan.entrants) == 1:
        plain = (f"no race: only {winner.name} fits what is left of the budget with its rung and "
                 f"its training" + (f" ({', '.join(plan.dropped)} would not)" if plan.dropped else ""))
        return {"winner": winner.name, "seconds": round(seconds, 1), "survivors": plan.survivors,
                "scale": plan.scale, "worst_case_seconds": plan.worst_seconds, "dropped": plan.dropped,
                "rung_fractions": list(RUNG_FRACTIONS), "entrants": [], "plain": plain}
    plain = f"race: {winner.name} won on validation accuracy " + (
        f"({winner.score:.3f})" if winner.score is not None else "(nothing was scored)") + \
        "; " + ", ".join(f"{e.name} {e.score:.3f}" for e in plan.entrants
                         if e is not winner and e.score is not None) + \
        f"; the race took {seconds:.0f} s" + ("" if budget_s is None else f" of {budget_s:.0f} s planned")
    return {"winner": winner.name, "seconds": round(seconds, 1), "survivors": plan.survivors,
            "scale": plan.scale, "worst_case_seconds": plan.worst_seconds, "dropped": plan.dropped,
            "rung_fractions": list(RUNG_FRACTIONS), "entrants": rows, "plain": plain}


def race_recipe(requested: TrainConfig, index: ImageIndex, rt: Runtime, parts, auto: dict, folder: Path,
                *, started: float, progress: bool) -> tuple[TrainConfig, RaceOutcome]:
    """Run the race of ``auto["entrants"]`` (strategy auto's reasoning, which gets the race's
    record and the winner) within ``requested.train.budget`` counted from ``started``; returns
    the winner's config, its epochs fitted to what is left of the budget at its measured epoch
    time, and the outcome.  ``requested``: the config as given (strategy auto)."""
    budget_s = None if requested.train.budget is None else requested.train.budget * 60
    planned_end = None if budget_s is None else started + budget_s * BUDGET_SHARE
    race = Race(requested, index, rt, parts, folder, progress=progress,
                seconds=None if planned_end is None else planned_end - time.monotonic(),
                deadline=planned_end)  # the rest of the budget: the winner's evaluation and report
    outcome = race.run(entrants_of(auto))
    cfg, winner = outcome.cfg, outcome.winner
    if planned_end is not None and winner.end_to_end and not winner.finished and winner.trained:
        # the winner's remaining epochs from its measured epoch time, into what is left (rank 0's)
        more = _from_rank0(rt, int(max(0.0, planned_end - time.monotonic()) // max(winner.epoch_seconds, 1e-6)))
        cfg.train.epochs = max(1, winner.trained, min(winner.epochs, winner.trained + more))
    settings = {**winner.changes, "train.epochs": cfg.train.epochs}
    if winner.lr is not None:
        settings["optim.lr"] = winner.lr
    raced = len(outcome.record["entrants"]) > 1
    auto.update(race=outcome.record, chosen=winner.recipe, settings=settings,
                decision=f"{winner.name}: " + ("won the recipe race on validation accuracy" if raced
                                              else "the only candidate that fits the budget"))
    lr = f" at lr {winner.lr:.2g} ({winner.lr_source})" if winner.lr is not None else ""
    auto["plain"] = [*auto["plain"], outcome.record["plain"] + f"; it trains {cfg.train.epochs} epochs in all{lr}."]
    log.info("auto: %s", auto["plain"][-1])
    return cfg, outcome


def _from_rank0(rt: Runtime, value):
    """``value`` as rank 0 has it, on every process of a distributed run (clocks differ)."""
    if not rt.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def entrants_of(reasoning: dict) -> list[Entrant]:
    """The race's entrants from strategy auto's ``reasoning["entrants"]``."""
    return [Entrant(c["name"], c["recipe"], dict(c["changes"]), float(c.get("epoch_seconds") or 0.0),
                    float(c.get("fixed_seconds") or 0.0), float(c.get("images_per_second") or 0.0))
            for c in reasoning.get("entrants", [])]


def install_checkpoint(source: Path, run_dir: Path) -> None:
    """The winner's paused checkpoint as ``run_dir``'s own (saved again: it carries the run's id),
    so that the run continues from it as a resume would."""
    state = ckpt.load_checkpoint(source)
    if state is None:
        return
    ckpt.save_checkpoint(Path(run_dir) / "checkpoints" / "last.pt", state)


def remove_race_folder(run_dir: Path) -> None:
    """Delete ``run_dir/race`` once the winner's checkpoint is the run's: only the entrant folders
    this race marked are removed."""
    folder = Path(run_dir) / FOLDER
    if not folder.is_dir():
        return
    for sub in folder.iterdir():
        if sub.is_dir() and (fsutil.read_marker(sub) or {}).get("race_entrant"):
            shutil.rmtree(sub, ignore_errors=True)
    if not any(folder.iterdir()):
        folder.rmdir()
