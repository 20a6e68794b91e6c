#!/usr/bin/env python
"""Train the building blocks of the course notes on the embedded digits and write the README's
"From the notes" table.

Every row is ``python train.py <overrides>`` in its own process and run directory, changing one thing
against a baseline: the LeNet-5 rows against plain ``python train.py`` (LeNet-5, Adam 5e-3, one-cycle,
40 epochs, the digits augmentation, cross-entropy with label smoothing 0.1); the activation rows also on
a residual net (CIFAR ResNet-20 at 16 x 16 px, 10 epochs, ``experiment=resnet20_digits``); the baselines
are their ``experiment=`` recipes. Test accuracy (best-validation weights) and training time come from
each run's ``metrics.json``.

    python scripts/notes_digits.py                          # every row
    python scripts/notes_digits.py --groups loss optimizer  # some groups
    python scripts/notes_digits.py --update-readme          # rewrite the table between the markers
    python scripts/notes_digits.py --from-runs              # table from finished runs only

Options after ``--`` go to every run as Hydra overrides (e.g. ``-- trainer.device=cuda``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from zoo_results import REPO, finished, publish, split_overrides, train_run

START, END = "<!-- notes:start -->", "<!-- notes:end -->"
RESNET = ("experiment=resnet20_digits", "model.input_size=16", "trainer.max_epochs=10")
LENET_CKPT = "{out}/lenet5/checkpoints/best.pt"  # the baseline run's weights, for kNN on features


@dataclass(frozen=True)
class Row:
    group: str
    setting: str
    name: str  # run directory under --out
    overrides: tuple[str, ...] = ()

    def args(self, out: Path) -> list[str]:
        return [o.format(out=out) for o in self.overrides]

    def shown(self) -> str:
        text = " ".join(self.overrides).replace(LENET_CKPT, "<lenet5 run>/checkpoints/best.pt")
        return f"`python train.py {text}`" if text else "`python train.py`"


def rows() -> list[Row]:
    out: list[Row] = [Row("baseline", "LeNet-5, the defaults (ReLU, cross-entropy, Adam)", "lenet5")]
    out += [
        Row("baseline", "linear classifier (softmax)", "linear", ("experiment=linear_digits",)),
        Row("baseline", "linear classifier (multiclass SVM)", "linear_hinge", ("experiment=linear_digits", "task.loss=hinge")),
        Row("baseline", "MLP 256-128", "mlp", ("experiment=mlp_digits",)),
        Row("baseline", "kNN on pixels", "knn", ("experiment=knn_digits",)),
        Row("baseline", "kNN on LeNet-5 features", "knn_lenet5",
            ("experiment=knn_digits", f"model.features={LENET_CKPT}", "model.input_size=32")),
    ]
    for loss in ("hinge", "squared_hinge", "bce"):
        out.append(Row("loss", loss, f"loss_{loss}", (f"task.loss={loss}",)))
    out.append(Row("loss", "cross_entropy, no label smoothing", "loss_ce_no_smoothing", ("task.label_smoothing=0",)))
    acts = ("relu", "leaky_relu", "prelu", "elu", "gelu", "tanh", "sigmoid", "maxout")
    out += [Row("activation (LeNet-5)", act, f"act_{act}", (f"model.act={act}",)) for act in acts[1:]]  # relu: the baseline
    out.append(Row("activation (ResNet-20)", "relu", "resnet20_relu", RESNET))
    out += [Row("activation (ResNet-20)", act, f"resnet20_act_{act}", (*RESNET, f"model.act={act}"))
            for act in acts if act not in ("relu", "maxout")]  # ResNet refuses maxout (it halves widths)
    for init in ("xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal"):
        out.append(Row("initialisation", init, f"init_{init}", (f"model.init={init}",)))
    out.append(Row("initialisation", "normal, std 0.01", "init_normal", ("model.init=normal", "model.init_std=0.01")))
    for reg in ("l1", "elastic", "max_norm"):
        out.append(Row("regulariser", reg, f"reg_{reg}", (f"regularizer={reg}",)))
    out.append(Row("regulariser", "L2 (the optimizer's weight decay 1e-4)", "reg_l2", ("optimizer.weight_decay=1e-4",)))
    # each optimizer at its own config's learning rate, under the default one-cycle schedule
    for opt in ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adamw", "adadelta"):
        out.append(Row("optimiser", opt, f"opt_{opt}", (f"optimizer={opt}",)))
    out.append(Row("optimiser", "adam, the notes' 1e-3", "opt_adam_1e-3", ("optimizer.lr=1e-3",)))
    out.append(Row("optimiser", "lbfgs, 10 epochs", "opt_lbfgs", ("optimizer=lbfgs", "trainer.max_epochs=10")))
    out.append(Row("optimiser", "lbfgs, full batch", "opt_lbfgs_full", ("experiment=lbfgs_digits",)))
    out += [
        Row("preprocessing", "zca", "prep_zca", ("data.normalize=zca",)),
        Row("preprocessing", "linear classifier, pca_whiten", "prep_linear_pca",
            ("experiment=linear_digits", "data.normalize=pca_whiten")),
    ]
    return out


GROUP_KEYS = {"baseline": "baseline", "loss": "loss", "activation": "activation", "initialisation": "init",
              "regulariser": "regularizer", "optimiser": "optimizer", "preprocessing": "preprocessing"}


def group_key(row: Row) -> str:
    return GROUP_KEYS[row.group.split(" ")[0]]


def table(done: list[tuple[Row, dict]]) -> str:
    lines = ["| group | setting | command | params | test top-1 | train time (s) |", "|---|---|---|---:|---:|---:|"]
    for row, m in done:
        lines.append(f"| {row.group} | {row.setting} | {row.shown()} | {m['params']:,} | "
                     f"{100 * m['test']['acc']:.2f}% | {m['fit_time_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    argv, overrides = split_overrides(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", nargs="*", choices=sorted(set(GROUP_KEYS.values())),
                        help="only these groups (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "notes",
                        help="run directories go to OUT/<row>; finished ones are reused")
    parser.add_argument("--from-runs", action="store_true", help="only tabulate runs already under --out")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS per run")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    out = args.out.resolve()

    done = []
    for row in rows():
        if args.groups and group_key(row) not in args.groups and row.name != "lenet5":
            continue
        run_dir = out / row.name
        if args.from_runs:
            metrics = finished(run_dir)
        else:
            t0 = time.perf_counter()
            metrics = train_run(run_dir, [*row.args(out), *overrides], args.threads)
            if metrics is not None and "test" in metrics:
                print(f"  {row.name}: test acc {100 * metrics['test']['acc']:.2f}% "
                      f"in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        if metrics is not None and "test" in metrics:
            done.append((row, metrics))
    publish(done, table, args.update_readme, START, END)


if __name__ == "__main__":
    main()
